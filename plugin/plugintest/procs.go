package plugintest

import "github.com/prometheus/procfs"

// Proc is one process of the machine, as Procs saw it.
type Proc struct {
	PID, PPID int
	Comm      string   // the kernel's name of it (/proc/PID/comm)
	Args      []string // its command line; empty for a kernel thread
}

// Procs lists the processes running now: tests look for the lab's daemons, a plugin's
// descendants or other load on the machine. A process that exits while it is read is left out.
func Procs() ([]Proc, error) {
	all, err := procfs.AllProcs()
	if err != nil {
		return nil, err
	}
	out := make([]Proc, 0, len(all))
	for _, p := range all {
		st, err := p.Stat()
		if err != nil {
			continue
		}
		args, err := p.CmdLine()
		if err != nil {
			continue
		}
		out = append(out, Proc{PID: p.PID, PPID: st.PPID, Comm: st.Comm, Args: args})
	}
	return out, nil
}
