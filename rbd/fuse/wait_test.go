package fuse

import (
	"context"
	"os/exec"
	"testing"
	"time"
)

func TestWaitExit(t *testing.T) {
	short := exec.Command("sleep", "0.2")
	long := exec.Command("sleep", "30")
	for _, c := range []*exec.Cmd{short, long} {
		if err := c.Start(); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() { _ = long.Process.Kill(); _ = long.Wait() })

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	start := time.Now()
	if !waitExit(ctx, []int{short.Process.Pid}) {
		t.Fatal("waitExit gave up on a process that exits after 0.2 s")
	}
	if d := time.Since(start); d < 150*time.Millisecond {
		t.Errorf("waitExit returned after %v, before the process exited", d)
	}
	_ = short.Wait()
	if !waitExit(ctx, []int{short.Process.Pid}) {
		t.Error("waitExit of a process that is gone (reaped) = false, want true")
	}

	ctx2, cancel2 := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel2()
	if waitExit(ctx2, []int{long.Process.Pid}) {
		t.Error("waitExit of a process that keeps running = true, want false at the deadline")
	}
	if ctx2.Err() == nil {
		t.Error("waitExit returned false before its deadline")
	}
}
