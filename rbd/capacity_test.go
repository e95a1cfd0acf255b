package rbd

import (
	"errors"
	"testing"

	"github.com/cephdocker/ceph-docker-plugin/driver"
)

// `ceph df -f json` as pacific prints it (trimmed).
const dfOutput = `{"stats":{"total_bytes":10737418240,"total_avail_bytes":9785868288},
"pools":[{"name":"device_health_metrics","id":1,"stats":{"stored":0,"max_avail":9785868288}},
{"name":"volumes","id":2,"stats":{"stored":123,"objects":4,"percent_used":0.01,"max_avail":3262000000}}]}`

func TestPoolAvail(t *testing.T) {
	n, err := poolAvail([]byte(dfOutput), "volumes")
	if err != nil || n != 3262000000 {
		t.Errorf("volumes: %d, %v", n, err)
	}
	if _, err := poolAvail([]byte(dfOutput), "nope"); !errors.Is(err, driver.ErrNotFound) {
		t.Errorf("unknown pool: %v, want ErrNotFound", err)
	}
	if _, err := poolAvail([]byte(`{"pools":[{"name":"volumes","stats":{}}]}`), "volumes"); err == nil {
		t.Error("no max_avail: no error")
	}
	if _, err := poolAvail([]byte("not json"), "volumes"); err == nil {
		t.Error("bad output: no error")
	}
}
