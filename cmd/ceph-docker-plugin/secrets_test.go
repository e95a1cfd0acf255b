package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// The secret settings are taken out of the process's environment as the kernel shows it
// (/proc/self/environ), not only out of the runtime's copy, and children inherit none of them.
// The test binary plays the plugin: it runs itself with secrets in its environment, and that
// process calls takeSecrets (which re-executes it) and reports what it sees.
func TestTakeSecretsScrubsTheEnvironBlock(t *testing.T) {
	if os.Getenv("CDP_SECRETS_HELPER") == "1" {
		secretsHelper()
		return
	}
	const pw, ac = "pw-Zq81-secret", "ac-Xy72-secret"
	cmd := exec.Command(os.Args[0], "-test.run=^TestTakeSecretsScrubsTheEnvironBlock$")
	cmd.Env = append(os.Environ(), "CDP_SECRETS_HELPER=1", "OS_PASSWORD="+pw,
		"OS_APPLICATION_CREDENTIAL_SECRET="+ac, "OS_USERNAME=demo")
	var out strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	pid := cmd.Process.Pid
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper: %v\n%s", err, out.String())
	}
	var r secretsReport
	line := out.String()
	if i := strings.Index(line, "REPORT "); i >= 0 {
		line = line[i+len("REPORT "):]
		line, _, _ = strings.Cut(line, "\n")
	}
	if err := json.Unmarshal([]byte(line), &r); err != nil {
		t.Fatalf("helper's report: %v\n%s", err, out.String())
	}
	if r.Pid != pid {
		t.Errorf("the re-executed plugin runs as pid %d, want its own pid %d kept", r.Pid, pid)
	}
	if r.Secrets["OS_PASSWORD"] != pw || r.Secrets["OS_APPLICATION_CREDENTIAL_SECRET"] != ac || len(r.Secrets) != 2 {
		t.Errorf("secrets taken = %v, want OS_PASSWORD and OS_APPLICATION_CREDENTIAL_SECRET with their values", r.Secrets)
	}
	if r.Warning != "" {
		t.Errorf("warning %q", r.Warning)
	}
	for what, env := range map[string]string{"/proc/self/environ": r.Environ, "a child's environment": r.Child} {
		for _, v := range []string{pw, ac, "OS_PASSWORD", "OS_APPLICATION_CREDENTIAL_SECRET"} {
			if strings.Contains(env, v) {
				t.Errorf("%s holds %q", what, v)
			}
		}
		// (The pipe's number stays in the plugin's own block: the pipe is read and closed.)
		if what != "/proc/self/environ" && strings.Contains(env, secretsFDEnv) {
			t.Errorf("%s holds %s", what, secretsFDEnv)
		}
		if !strings.Contains(env, "OS_USERNAME=demo") {
			t.Errorf("%s lost the other settings: %q", what, env)
		}
	}
}

type secretsReport struct {
	Pid            int
	Secrets        map[string]string
	Warning        string
	Environ, Child string
}

func secretsHelper() {
	secrets, warning, err := takeSecrets()
	if err != nil {
		fmt.Println("takeSecrets:", err)
		os.Exit(1)
	}
	environ, err := os.ReadFile("/proc/self/environ")
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	child, err := exec.Command("cat", "/proc/self/environ").Output()
	if err != nil {
		fmt.Println(err)
		os.Exit(1)
	}
	b, _ := json.Marshal(secretsReport{Pid: os.Getpid(), Secrets: secrets, Warning: warning,
		Environ: strings.ReplaceAll(string(environ), "\x00", "\n"), Child: strings.ReplaceAll(string(child), "\x00", "\n")})
	fmt.Println("REPORT " + string(b))
	os.Exit(0)
}

func TestIsSecret(t *testing.T) {
	for name, want := range map[string]bool{
		"OS_PASSWORD": true, "OS_APPLICATION_CREDENTIAL_SECRET": true, "OS_TOKEN": true, "OS_AUTH_TOKEN": true,
		"OS_USERNAME": false, "OS_APPLICATION_CREDENTIAL_ID": false, "OS_AUTH_URL": false, "PASSWORD": false,
	} {
		if got := isSecret(name); got != want {
			t.Errorf("isSecret(%s) = %v, want %v", name, got, want)
		}
	}
}
