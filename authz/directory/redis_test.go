package directory_test

import (
	"testing"

	"github.com/stepup-dev/stepup/authz/storage"
	"github.com/stepup-dev/stepup/authz/storage/redis"
	"github.com/stepup-dev/stepup/internal/testenv"
)

// The directory on a real redis-server too: its atomic steps are the
// store's scripts, which the memory store only imitates.
func init() {
	backends["redis"] = func(t *testing.T) storage.Records {
		testenv.Require(t, "redis-server", "redis-server")
		st, err := redis.New(redis.Config{URL: "redis://" + testenv.StartRedis(t) + "/0"})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
}
