package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	"github.com/cephdocker/ceph-docker-plugin/driver/execx"
)

// fio runs one fio job on path (a file or a block device) and returns MiB/s or IOPS. The job is
// one pass: over the whole region (size), or over ioSize of it for random jobs (each block at most
// once). Writes end with an fsync, so that the data has reached rbd-fuse, not only the page cache.
func fio(ctx context.Context, path, size, rw, bs, ioSize, unit string) (float64, error) {
	args := []string{"--name=bench", "--filename=" + path, "--size=" + size, "--rw=" + rw, "--bs=" + bs,
		"--direct=1", "--ioengine=libaio", "--iodepth=16", "--randrepeat=0", "--output-format=json"}
	if ioSize != "" {
		args = append(args, "--io_size="+ioSize)
	}
	if strings.Contains(rw, "write") {
		args = append(args, "--end_fsync=1")
	}
	cctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	res, err := execx.Run(cctx, execx.Cmd{Name: "fio", Args: args})
	if err != nil {
		return 0, err
	}
	var out struct {
		Jobs []struct {
			Read, Write struct {
				BwBytes float64 `json:"bw_bytes"`
				IOPS    float64 `json:"iops"`
			}
		} `json:"jobs"`
	}
	if err := json.Unmarshal(res.Stdout, &out); err != nil || len(out.Jobs) == 0 {
		return 0, fmt.Errorf("fio output: %v", err)
	}
	j := out.Jobs[0]
	bw, iops := j.Read.BwBytes+j.Write.BwBytes, j.Read.IOPS+j.Write.IOPS
	if unit == "IOPS" {
		return iops, nil
	}
	return bw / (1 << 20), nil
}
