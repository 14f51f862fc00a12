package load

import (
	"context"
	"net/http"
)

// Healthz is GET /healthz: the cheapest answer a server gives, so its
// latency in a run is the floor that HTTP on this machine, the server's
// router and the load itself set for every other scenario of that run. It
// needs no credentials and is not among the default Scenarios.
const Healthz = "healthz"

type healthzWorker struct {
	r      *runner
	client *http.Client
	url    string
}

func (w *healthzWorker) setup(context.Context) error {
	w.client, w.url = w.r.httpClient(), w.r.endpoint("/healthz")
	return nil
}

func (w *healthzWorker) do(ctx context.Context, sw *stopwatch) (int, bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.url, nil)
	if err != nil {
		return 0, false, err
	}
	sw.start()
	resp, err := w.client.Do(req)
	if err != nil {
		return 0, false, err
	}
	if resp.StatusCode != http.StatusOK {
		return resp.StatusCode, false, pageError(resp)
	}
	drain(resp)
	sw.stop()
	return resp.StatusCode, false, nil
}
