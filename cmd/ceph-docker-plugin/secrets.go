package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"

	"golang.org/x/sys/unix"
)

// Secret settings (OS_PASSWORD, OS_APPLICATION_CREDENTIAL_SECRET, tokens) are read once at start
// and then exist only in this process's memory: not in its environment, nor in any child's.
//
// os.Unsetenv is not enough: it edits the Go runtime's copy, while /proc/PID/environ shows the
// block the kernel laid out at execve, which keeps the values for the life of the process (any
// root process on the host, and anything that reads a core dump, sees them). Overwriting that
// block in place would mean writing through memory the Go runtime hands out as immutable strings.
// So the plugin re-executes itself (execve of its own binary: same PID, same arguments, same
// stdout/stderr) with the secrets removed from the environment, and hands them to its new image
// through a pipe whose number is in CDP_SECRETS_FD: the new image reads the pipe once and closes
// it. The kernel's environ block of the process is then the scrubbed one, and every child
// (rbd-fuse, mkfs, modprobe: see execx) gets a minimal environment of its own on top.
//
// In the managed plugin the binary is the entrypoint and starts as PID 1 of the plugin's PID
// namespace. PID 1 must reap the orphans rbd-fuse leaves, which a Go program cannot do without
// stealing the exit statuses os/exec waits for; so as PID 1 the binary executes tini instead of
// itself, with the scrubbed environment and the pipe, and tini starts the plugin as its child.
// Had tini been the entrypoint, it would have kept the secrets in its own environ block for the
// life of the plugin.

// secretsFDEnv names the pipe the secrets arrive through after the re-exec.
const secretsFDEnv = "CDP_SECRETS_FD"

// maxSecrets bounds what the pipe carries: it is written before the exec, so it must fit the
// pipe's buffer (64 KiB on Linux).
const maxSecrets = 60 << 10

// isSecret tells the settings whose values are secrets: Keystone's passwords, application
// credential secrets and tokens (OS_PASSWORD, OS_APPLICATION_CREDENTIAL_SECRET, OS_TOKEN, ...).
func isSecret(name string) bool {
	if !strings.HasPrefix(name, "OS_") {
		return false
	}
	for _, w := range []string{"PASSWORD", "SECRET", "TOKEN"} {
		if strings.Contains(name, w) {
			return true
		}
	}
	return false
}

// splitSecrets separates an environment (NAME=value lines) into the secret settings and the rest.
func splitSecrets(environ []string) (secrets map[string]string, rest []string) {
	secrets = map[string]string{}
	for _, kv := range environ {
		k, v, _ := strings.Cut(kv, "=")
		if isSecret(k) {
			secrets[k] = v
		} else {
			rest = append(rest, kv)
		}
	}
	return secrets, rest
}

// takeSecrets returns the secret settings and makes sure they are in neither this process's
// environment nor its children's. On the first run with secrets in the environment it does not
// return: it re-executes the binary (see above), whose takeSecrets then reads them from the pipe.
// warning is set when the environ block could not be scrubbed (the re-exec failed): the values are
// then removed from the runtime's copy only, the one children inherit from.
func takeSecrets() (secrets map[string]string, warning string, err error) {
	if fdStr, ok := os.LookupEnv(secretsFDEnv); ok {
		os.Unsetenv(secretsFDEnv)
		secrets, err = readSecrets(fdStr)
		if err != nil {
			return nil, "", err
		}
		// (None can be left in the environment; should one be, it goes too.)
		extra, _ := splitSecrets(os.Environ())
		for k, v := range extra {
			os.Unsetenv(k)
			if _, ok := secrets[k]; !ok {
				secrets[k] = v
			}
		}
		return secrets, "", nil
	}
	secrets, rest := splitSecrets(os.Environ())
	asPID1 := os.Getpid() == 1 && reaperAvailable()
	if len(secrets) == 0 && !asPID1 {
		return secrets, "", nil
	}
	err = reexecWithout(secrets, rest, asPID1)
	// Only reached when the re-exec failed.
	for k := range secrets {
		os.Unsetenv(k)
	}
	names := make([]string, 0, len(secrets))
	for k := range secrets {
		names = append(names, k)
	}
	slices.Sort(names)
	return secrets, fmt.Sprintf("%s removed from the environment, but the re-exec that scrubs /proc/self/environ failed (%v): "+
		"they stay readable there by root on this host", strings.Join(names, ", "), err), nil
}

// reaper is the init that PID 1 hands over to (tini, in the plugin's root filesystem).
var reaper = "/usr/bin/tini"

func reaperAvailable() bool {
	fi, err := os.Stat(reaper)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// reexecWithout writes secrets into a pipe and executes this binary again with env and the pipe's
// number, or, underInit, the reaper (tini -s --) with this binary and its arguments as its child.
// It returns only on failure.
func reexecWithout(secrets map[string]string, env []string, underInit bool) error {
	payload, err := json.Marshal(secrets)
	if err != nil {
		return err
	}
	if len(payload) > maxSecrets {
		return fmt.Errorf("the secret settings are %d bytes, more than %d", len(payload), maxSecrets)
	}
	var p [2]int
	if err := unix.Pipe(p[:]); err != nil { // without O_CLOEXEC: the read end survives the exec
		return err
	}
	r, w := p[0], p[1]
	for rest := payload; len(rest) > 0; {
		n, err := unix.Write(w, rest)
		if err != nil {
			unix.Close(r)
			unix.Close(w)
			return fmt.Errorf("write the secrets to a pipe: %w", err)
		}
		rest = rest[n:]
	}
	unix.Close(w) // the new image reads to EOF
	env = append(env, secretsFDEnv+"="+strconv.Itoa(r))
	// By its path, so that the process keeps its name (comm); /proc/self/exe if the binary was
	// replaced or removed since it started.
	self, err := os.Executable()
	if err != nil || strings.HasSuffix(self, " (deleted)") {
		self = "/proc/self/exe"
	}
	path, argv := self, os.Args
	if underInit {
		// tini's child is executed by path: /proc/self/exe would name tini by then.
		if self == "/proc/self/exe" {
			self = os.Args[0]
		}
		path, argv = reaper, append([]string{reaper, "-s", "--", self}, os.Args[1:]...)
	}
	err = unix.Exec(path, argv, env)
	unix.Close(r)
	return fmt.Errorf("re-exec %s: %w", path, err)
}

// readSecrets reads and closes the pipe the previous image wrote the secrets into.
func readSecrets(fdStr string) (map[string]string, error) {
	fd, err := strconv.Atoi(fdStr)
	if err != nil || fd < 3 {
		return nil, fmt.Errorf("%s=%q: not a file descriptor this plugin passed to itself; unset it", secretsFDEnv, fdStr)
	}
	unix.CloseOnExec(fd)
	f := os.NewFile(uintptr(fd), "secrets")
	defer f.Close()
	raw, err := io.ReadAll(io.LimitReader(f, maxSecrets+1))
	if err != nil {
		return nil, fmt.Errorf("read the secret settings from %s=%d: %w", secretsFDEnv, fd, err)
	}
	secrets := map[string]string{}
	if err := json.Unmarshal(raw, &secrets); err != nil {
		return nil, errors.New("the secret settings passed to the re-executed plugin are unreadable; restart it")
	}
	return secrets, nil
}
