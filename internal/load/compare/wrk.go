package compare

import (
	"bufio"
	"bytes"
	"context"
	"encoding/base64"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"golang.org/x/oauth2"
	"golang.org/x/oauth2/clientcredentials"

	"github.com/stepup-dev/stepup/internal/load"
)

// wrkDriver runs wrk with a Lua script that sends the scenario's request
// and sorts every answer into internal/load's kinds, checking a 2xx body
// for what the scenario needs (a token, an active introspection).
type wrkDriver struct {
	path, version, dir   string
	concurrency, threads int
	seconds              int
}

func (d *wrkDriver) name() string {
	return fmt.Sprintf("wrk %s (%d threads; a Lua script per scenario)", d.version, d.threads)
}

// wrkRequest is what the script sends, and what a usable 2xx body holds.
type wrkRequest struct {
	method, path, body string
	headers            map[string]string
	expect             string
}

func (d *wrkDriver) drive(ctx context.Context, base, scenario string, c credentials) (outcome, error) {
	req, err := newWRKRequest(ctx, base, scenario, c)
	if err != nil {
		return outcome{}, err
	}
	script := filepath.Join(d.dir, scenario+".lua")
	if err := os.WriteFile(script, []byte(wrkScript(req)), 0o600); err != nil {
		return outcome{}, err
	}
	cmd := exec.CommandContext(ctx, d.path, "-t", strconv.Itoa(d.threads), "-c", strconv.Itoa(d.concurrency),
		"-d", strconv.Itoa(d.seconds)+"s", "--timeout", "30s", "-s", script, base+req.path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		return outcome{}, fmt.Errorf("wrk: %v: %s%s", err, stderr.Bytes(), out)
	}
	return parseWRK(out)
}

func newWRKRequest(ctx context.Context, base, scenario string, c credentials) (wrkRequest, error) {
	basic := "Basic " + base64.StdEncoding.EncodeToString([]byte(url.QueryEscape(c.id)+":"+url.QueryEscape(c.secret)))
	form := map[string]string{"Content-Type": "application/x-www-form-urlencoded", "Authorization": basic}
	switch scenario {
	case load.ClientCredentials:
		return wrkRequest{method: http.MethodPost, path: "/oauth2/token", body: "grant_type=client_credentials",
			headers: form, expect: `"access_token"`}, nil
	case load.Introspect:
		cc := clientcredentials.Config{ClientID: c.id, ClientSecret: c.secret, TokenURL: base + "/oauth2/token",
			AuthStyle: oauth2.AuthStyleInHeader}
		tok, err := cc.Token(ctx)
		if err != nil {
			return wrkRequest{}, fmt.Errorf("a token to introspect: %w", err)
		}
		body := url.Values{"token": {tok.AccessToken}, "token_type_hint": {"access_token"}}.Encode()
		return wrkRequest{method: http.MethodPost, path: "/oauth2/introspect", body: body,
			headers: form, expect: `"active":true`}, nil
	case load.Healthz:
		return wrkRequest{method: http.MethodGet, path: "/healthz"}, nil
	}
	return wrkRequest{}, fmt.Errorf("no wrk request for scenario %q", scenario)
}

// wrkScript is the Lua script for one scenario. Each wrk thread counts its
// answers by kind and keeps the first body of each failing kind; done()
// adds the threads up and prints one "stepup-wrk" line of totals, a
// "stepup-wrk-kind" line per kind and a "stepup-wrk-sample" line per
// failing kind, which parseWRK reads.
func wrkScript(r wrkRequest) string {
	var b strings.Builder
	b.WriteString("-- Written by stepupd compare for one scenario.\n")
	fmt.Fprintf(&b, "wrk.method = %s\n", strconv.Quote(r.method))
	if r.body != "" {
		fmt.Fprintf(&b, "wrk.body = %s\n", strconv.Quote(r.body))
	}
	for _, k := range slices.Sorted(maps.Keys(r.headers)) {
		fmt.Fprintf(&b, "wrk.headers[%s] = %s\n", strconv.Quote(k), strconv.Quote(r.headers[k]))
	}
	fmt.Fprintf(&b, "local expect = %s\n", strconv.Quote(r.expect))
	b.WriteString(`local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  kinds = {}
  samples = {}
end

function response(status, headers, body)
  local kind
  if status >= 200 and status < 300 then
    if expect == "" or string.find(body, expect, 1, true) then kind = "2xx" else kind = "invalid" end
  elseif status == 503 then kind = "503"
  elseif status >= 500 then kind = "5xx:" .. status
  elseif status >= 400 then kind = "4xx:" .. status
  else kind = "invalid" end
  kinds[kind] = (kinds[kind] or 0) + 1
  if kind ~= "2xx" and samples[kind] == nil then
    samples[kind] = status .. " " .. string.gsub(string.sub(body or "", 1, 300), "%c", " ")
  end
end

function done(summary, latency, requests)
  local kinds, samples = {}, {}
  for _, t in ipairs(threads) do
    for k, n in pairs(t:get("kinds") or {}) do kinds[k] = (kinds[k] or 0) + n end
    for k, s in pairs(t:get("samples") or {}) do samples[k] = samples[k] or s end
  end
  local e = summary.errors
  io.write(string.format("stepup-wrk duration_us=%.0f requests=%.0f transport=%.0f p50_us=%.0f p99_us=%.0f\n",
    summary.duration, summary.requests, e.connect + e.read + e.write + e.timeout,
    latency:percentile(50), latency:percentile(99)))
  for k, n in pairs(kinds) do io.write(string.format("stepup-wrk-kind %s %.0f\n", k, n)) end
  for k, s in pairs(samples) do io.write(string.format("stepup-wrk-sample %s %s\n", k, s)) end
end
`)
	return b.String()
}

// parseWRK reads what wrkScript's done() printed.
func parseWRK(out []byte) (outcome, error) {
	o := outcome{counts: map[string]int{}, samples: map[string]string{}}
	seen := false
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 0 {
			continue
		}
		switch f[0] {
		case "stepup-wrk":
			seen = true
			for _, kv := range f[1:] {
				k, v, _ := strings.Cut(kv, "=")
				n, err := strconv.ParseInt(v, 10, 64)
				if err != nil {
					return o, fmt.Errorf("wrk: bad %q in %q", kv, sc.Text())
				}
				switch k {
				case "duration_us":
					o.elapsed = time.Duration(n) * time.Microsecond
				case "transport":
					if n > 0 {
						o.counts[load.KindTransport] = int(n)
					}
				case "p50_us":
					o.p50 = time.Duration(n) * time.Microsecond
				case "p99_us":
					o.p99 = time.Duration(n) * time.Microsecond
				}
			}
		case "stepup-wrk-kind":
			if len(f) != 3 {
				return o, fmt.Errorf("wrk: bad line %q", sc.Text())
			}
			n, err := strconv.Atoi(f[2])
			if err != nil {
				return o, fmt.Errorf("wrk: bad line %q", sc.Text())
			}
			o.counts[f[1]] += n
		case "stepup-wrk-sample":
			if len(f) >= 2 {
				o.samples[f[1]] = strings.Join(f[2:], " ")
			}
		}
	}
	if !seen {
		return o, fmt.Errorf("wrk printed no totals; its output:\n%s", out)
	}
	for _, n := range o.counts {
		o.ops += n
	}
	o.ok = o.counts[load.KindOK]
	return o, nil
}
