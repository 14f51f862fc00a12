package gateway

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"regexp"
	"strings"
	"time"

	"golang.org/x/crypto/ssh"

	"github.com/stepup-dev/stepup/internal/gateway/gitrepo"
)

// maxCommand bounds an exec request: git sends a verb and a path.
const maxCommand = 4096

// Exit statuses, as a shell would give them.
const (
	exitOK      = 0
	exitRefused = 1
	exitUnknown = 127
)

// gitProtocol is what git puts in GIT_PROTOCOL ("version=2"); nothing else
// from the client's environment reaches a process here.
var gitProtocol = regexp.MustCompile(`^[a-z0-9=:._-]{1,64}$`)

// session serves one session channel: it collects the setup requests
// until exec or shell, then decides and runs. Everything else a client may
// ask for (pty, X11, agent forwarding, subsystems) is declined.
func (s *Server) session(ctx context.Context, log *slog.Logger, service string, id identity, ch ssh.Channel, reqs <-chan *ssh.Request) {
	defer ch.Close()
	// A session that never says what to run would hold its slot forever.
	idle := time.AfterFunc(s.cfg.HandshakeTimeout, func() { _ = ch.Close() })
	defer idle.Stop()
	var env []string
	for req := range reqs {
		switch req.Type {
		case "env":
			var kv struct{ Name, Value string }
			ok := ssh.Unmarshal(req.Payload, &kv) == nil && kv.Name == "GIT_PROTOCOL" && gitProtocol.MatchString(kv.Value)
			if ok {
				env = []string{"GIT_PROTOCOL=" + kv.Value}
			}
			reply(req, ok)
		case "exec", "shell":
			var cmd struct{ Command string }
			if req.Type == "exec" && (ssh.Unmarshal(req.Payload, &cmd) != nil || cmd.Command == "" || len(cmd.Command) > maxCommand) {
				reply(req, false)
				continue
			}
			if !idle.Stop() {
				return
			}
			reply(req, true)
			// Window changes and signals may follow; nothing here uses them.
			go ssh.DiscardRequests(reqs)
			exit(ch, s.start(ctx, log, service, id, ch, cmd.Command, env))
			return
		default:
			reply(req, false)
		}
	}
}

func reply(req *ssh.Request, ok bool) {
	if req.WantReply {
		_ = req.Reply(ok, nil)
	}
}

// exit ends a session the way sshd does: end of output, the status, close.
func exit(ch ssh.Channel, code int) {
	_ = ch.CloseWrite()
	_, _ = ch.SendRequest("exit-status", false, ssh.Marshal(struct{ Status uint32 }{uint32(code)}))
	_ = ch.Close()
}

// start decides whether the session may run and runs command ("" for a
// shell). It returns the exit status.
func (s *Server) start(ctx context.Context, log *slog.Logger, service string, id identity, ch ssh.Channel, command string, env []string) int {
	log = log.With("command", command)
	dctx, cancel := context.WithTimeout(ctx, s.cfg.DecideTimeout)
	d := Decide(dctx, Policy{Services: s.cfg.Services, Access: s.access, Revocations: s.revoked, Now: s.cfg.Now}, id.attempt(service))
	cancel()
	switch d.Kind {
	case Allow:
	case Unavailable:
		log.Error("could not decide on an SSH session", "kind", d.Kind.String(), "err", d.Err)
		_, _ = io.WriteString(ch.Stderr(), d.SSHText())
		return exitRefused
	default:
		log.Info("SSH session refused", "kind", d.Kind.String(), "reason", oneLine(d.SSHText()))
		_, _ = io.WriteString(ch.Stderr(), d.SSHText())
		return exitRefused
	}
	log.Info("SSH session allowed")
	return s.execute(ctx, log, service, id, ch, command, env)
}

// execute is the built-in shell.
func (s *Server) execute(ctx context.Context, log *slog.Logger, service string, id identity, ch ssh.Channel, command string, env []string) int {
	who := id.Username + " " + service
	if command == "" {
		fmt.Fprintf(ch, "Welcome, %s. There is no interactive shell here: use git, or run whoami or echo.\n", who)
		return exitOK
	}
	words, err := splitWords(command)
	if err != nil || len(words) == 0 {
		fmt.Fprintf(ch.Stderr(), "stepup-gateway: cannot read the command %q: %v\n", command, err)
		return exitUnknown
	}
	switch verb := gitVerb(words); {
	case len(words) == 1 && words[0] == "whoami":
		fmt.Fprintln(ch, who)
		return exitOK
	case words[0] == "echo":
		fmt.Fprintln(ch, strings.Join(words[1:], " "))
		return exitOK
	case verb != "":
		// The path git asks for does not matter: each service has one
		// repository.
		code, err := s.repos.Serve(ctx, verb, service, env, gitrepo.Streams{Stdin: ch, Stdout: ch, Stderr: ch.Stderr()})
		if err != nil {
			log.Error("git failed", "err", err)
		}
		return code
	}
	fmt.Fprintf(ch.Stderr(), "stepup-gateway: unknown command %q; this gateway runs whoami, echo, git-upload-pack and git-receive-pack\n", words[0])
	return exitUnknown
}

// gitVerb recognizes "git-upload-pack PATH" and "git upload-pack PATH" (and
// receive-pack), returning the dashed verb, or "".
func gitVerb(words []string) string {
	if len(words) == 3 && words[0] == "git" {
		words = []string{"git-" + words[1], words[2]}
	}
	if len(words) == 2 && (words[0] == gitrepo.UploadPack || words[0] == gitrepo.ReceivePack) {
		return words[0]
	}
	return ""
}

// oneLine fits the text shown to a person into one log attribute.
func oneLine(s string) string {
	return strings.Join(strings.Fields(strings.ReplaceAll(s, "\n", " | ")), " ")
}
