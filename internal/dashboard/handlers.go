package dashboard

import (
	"bytes"
	"context"
	"crypto/hmac"
	"embed"
	"encoding/base64"
	"fmt"
	"html/template"
	"io/fs"
	"net/http"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/golive/golive/internal/approval"
	"github.com/golive/golive/internal/pki"
	golivev1 "github.com/golive/golive/proto/golive/v1"
)

//go:embed assets
var assets embed.FS

var tmpl = template.Must(template.New("").Funcs(template.FuncMap{
	"ts":    fmtTime,
	"iso":   isoTime,
	"roles": joinRoles,
	"short": func(s string) string { return s[:min(len(s), 12)] },
	"pct":   func(f float64) string { return strconv.FormatFloat(f*100, 'f', 3, 64) + "%" },
	"f1":    func(f float64) string { return strconv.FormatFloat(f, 'f', 1, 64) },
	"add":   func(a, b int) int { return a + b },
	"sub":   func(a, b int) int { return a - b },
	"dict":  dict,
}).ParseFS(assets, "assets/*.html"))

// agentsEvery is the shortest time between two updates of a page's agents.
const agentsEvery = 500 * time.Millisecond

// sections are the parts of the page that live updates replace, by id.
var sections = []string{"approval", "rollouts", "dns", "scaling", "agents", "history", "audit"}

func (s *Server) routes() {
	m := http.NewServeMux()
	static, _ := fs.Sub(assets, "assets")
	files := http.StripPrefix("/static/", http.FileServerFS(static))
	m.Handle("GET /static/dashboard.js", files)
	m.Handle("GET /static/dashboard.css", files)
	m.HandleFunc("GET /{$}", s.authed(s.page))
	m.HandleFunc("GET /rollout", s.authed(s.rolloutPage))
	m.HandleFunc("GET /events", s.authed(s.events))
	m.HandleFunc("GET /login", s.loginPage)
	m.HandleFunc("POST /login", s.login)
	m.HandleFunc("POST /logout", s.action("", s.logout))
	m.HandleFunc("POST /actions/stop", s.action(actStop, s.stop))
	m.HandleFunc("POST /actions/authorize", s.action(actAuthorize, s.authorize))
	m.HandleFunc("POST /actions/pause", s.action(actPause, s.pause))
	m.HandleFunc("POST /actions/abort", s.action(actAbort, s.abort))
	s.mux = http.NewServeMux()
	s.mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")
		h.Set("X-Frame-Options", "DENY")
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "same-origin") // no-referrer would make a form POST's Origin "null"
		h.Set("Cache-Control", "no-store")
		m.ServeHTTP(w, r)
	})
}

// authed lets only an authenticated caller through; others get the
// sign-in page and nothing else.
func (s *Server) authed(h func(http.ResponseWriter, *http.Request, viewer)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := s.authenticate(r)
		if err != nil {
			s.refuse(w, err)
			return
		}
		h(w, r, v)
	}
}

func (s *Server) refuse(w http.ResponseWriter, err error) {
	code := http.StatusForbidden
	if ae, ok := err.(*authError); ok {
		code = ae.code
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(code)
	tmpl.ExecuteTemplate(w, "signin", map[string]any{"Msg": err.Error(), "Dev": s.DevMode()})
}

// pageData is what one page, or one page's sections, is drawn from.
type pageData struct {
	V       viewer
	Dev     bool
	Replica string
	CSRF    string
	Flash   string
	Snap    *snapshot
	Now     time.Time
	Page    int
	Pages   int
	Rows    []*golivev1.Agent
	Phrases []string
	Detail  *rolloutView
	DetailE string
}

func (s *Server) pageData(v viewer, snap *snapshot, page int) *pageData {
	pd := &pageData{V: v, Dev: s.DevMode(), Replica: s.cfg.Replica, CSRF: s.signer.csrf(v.binding), Snap: snap, Now: s.cfg.Now(),
		Phrases: approval.AcceptedPhrases()}
	n := len(snap.agents)
	pd.Pages = max(1, (n+s.cfg.PageSize-1)/s.cfg.PageSize)
	pd.Page = min(max(page, 1), pd.Pages)
	lo := (pd.Page - 1) * s.cfg.PageSize
	pd.Rows = snap.agents[min(lo, n):min(lo+s.cfg.PageSize, n)]
	return pd
}

func pageParam(r *http.Request) int {
	p, _ := strconv.Atoi(r.URL.Query().Get("page"))
	return p
}

func (s *Server) page(w http.ResponseWriter, r *http.Request, v viewer) {
	snap, _ := s.current()
	pd := s.pageData(v, snap, pageParam(r))
	if ck, err := r.Cookie(flashCookie); err == nil {
		if b, err := base64.RawURLEncoding.DecodeString(ck.Value); err == nil {
			pd.Flash = string(b)
		}
		http.SetCookie(w, &http.Cookie{Name: flashCookie, Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: !s.DevMode()})
	}
	s.render(w, "page", pd)
}

func (s *Server) rolloutPage(w http.ResponseWriter, r *http.Request, v viewer) {
	snap, _ := s.current()
	pd := s.pageData(v, snap, 1)
	pd.Detail, pd.DetailE = s.detail(r.Context(), r.URL.Query().Get("id"))
	s.render(w, "rolloutpage", pd)
}

func (s *Server) detail(ctx context.Context, id string) (*rolloutView, string) {
	if id == "" {
		return nil, "no rollout named (?id=)"
	}
	ro, err := s.b.Rollout(ctx, id)
	if err != nil {
		return nil, status.Convert(err).Message()
	}
	rv := viewRollout(ro, 0)
	return &rv, ""
}

func (s *Server) render(w http.ResponseWriter, name string, data any) {
	var b bytes.Buffer
	if err := tmpl.ExecuteTemplate(&b, name, data); err != nil {
		s.log.Error("dashboard template", "template", name, "error", err)
		http.Error(w, "the dashboard could not draw this page; see the controller's log", http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Write(b.Bytes())
}

// renderSections draws each live section of pd.
func (s *Server) renderSections(pd *pageData, names []string) (map[string]string, error) {
	out := make(map[string]string, len(names))
	var b bytes.Buffer
	for _, n := range names {
		b.Reset()
		if err := tmpl.ExecuteTemplate(&b, n, pd); err != nil {
			return nil, err
		}
		out[n] = b.String()
	}
	return out, nil
}

// events streams the page's sections as server-sent events: all of them
// at first, then each one whose HTML changed with a new snapshot.
func (s *Server) events(w http.ResponseWriter, r *http.Request, v viewer) {
	rc := http.NewResponseController(w)
	h := w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("X-Accel-Buffering", "no")
	w.WriteHeader(http.StatusOK)
	page := pageParam(r)
	detailID := r.URL.Query().Get("rollout")
	names := sections
	if detailID != "" {
		names = []string{"approval", "detail"}
	}
	var expired <-chan time.Time
	if !v.expires.IsZero() {
		t := time.NewTimer(time.Until(v.expires))
		defer t.Stop()
		expired = t.C
	}
	ping := time.NewTicker(15 * time.Second)
	defer ping.Stop()
	last := map[string]string{}
	var ev bytes.Buffer
	// The agents' table changes with every heartbeat flush of a large
	// fleet: it goes at most every agentsEvery, the rest at once.
	var lastAgents time.Time
	var later <-chan time.Time
	for {
		snap, updated := s.current()
		pd := s.pageData(v, snap, page)
		if detailID != "" {
			pd.Detail, pd.DetailE = s.detail(r.Context(), detailID)
		}
		secs, err := s.renderSections(pd, names)
		if err != nil {
			s.log.Error("dashboard template", "error", err)
			return
		}
		ev.Reset()
		for _, n := range names {
			if last[n] == secs[n] {
				continue
			}
			if n == "agents" {
				if wait := agentsEvery - time.Since(lastAgents); wait > 0 {
					if later == nil {
						later = time.After(wait)
					}
					continue
				}
				lastAgents = time.Now()
			}
			writeEvent(&ev, n, secs[n])
			last[n] = secs[n]
		}
		if ev.Len() > 0 {
			if _, err := w.Write(ev.Bytes()); err != nil {
				return
			}
			if rc.Flush() != nil {
				return
			}
		}
	wait:
		select {
		case <-r.Context().Done():
			return
		case <-expired:
			fmt.Fprint(w, "event: expired\ndata: session ended\n\n")
			rc.Flush()
			return
		case <-ping.C:
			if _, err := fmt.Fprint(w, ": ping\n\n"); err != nil || rc.Flush() != nil {
				return
			}
			goto wait
		case <-later:
			later = nil
		case <-updated:
		}
	}
}

// writeEvent writes one server-sent event; each line of data is a data: line.
func writeEvent(b *bytes.Buffer, name, data string) {
	b.WriteString("event: ")
	b.WriteString(name)
	b.WriteByte('\n')
	for line := range strings.SplitSeq(data, "\n") {
		b.WriteString("data: ")
		b.WriteString(strings.TrimSuffix(line, "\r"))
		b.WriteByte('\n')
	}
	b.WriteByte('\n')
}

// action checks a POST (the caller, its Origin, its CSRF token and, for a
// named action, its roles) and runs h; h returns the message the page shows.
func (s *Server) action(name string, h func(w http.ResponseWriter, r *http.Request, v viewer) (string, error)) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		v, err := s.authenticate(r)
		if err != nil {
			s.refuse(w, err)
			return
		}
		if !s.sameOrigin(r) {
			http.Error(w, "refused: this request did not come from the dashboard's own page (Origin)", http.StatusForbidden)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, 64<<10)
		if !hmac.Equal([]byte(r.PostFormValue("csrf")), []byte(s.signer.csrf(v.binding))) {
			http.Error(w, "refused: missing or wrong CSRF token; reload the dashboard and try again", http.StatusForbidden)
			return
		}
		if name != "" && !v.may(name) {
			why := fmt.Sprintf("%s needs role %s to %s", v.Name, joinRoles(actionRoles[name]), name)
			s.b.Refused(context.WithoutCancel(r.Context()), v.Caller, name, why)
			http.Error(w, "refused: "+why, http.StatusForbidden)
			return
		}
		// An action outlives the browser's request: a STOP whose tab
		// closed mid-way still revokes.
		ctx, cancel := context.WithTimeout(context.WithoutCancel(r.Context()), 30*time.Second)
		defer cancel()
		msg, err := h(w, r.WithContext(ctx), v)
		if err != nil {
			msg = "refused: " + status.Convert(err).Message()
		}
		if msg != "" {
			http.SetCookie(w, &http.Cookie{Name: flashCookie, Value: base64.RawURLEncoding.EncodeToString([]byte(msg)), Path: "/",
				MaxAge: 60, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: !s.DevMode()})
		}
		back := "/"
		if ref := r.PostFormValue("back"); strings.HasPrefix(ref, "/") && !strings.HasPrefix(ref, "//") && !strings.ContainsAny(ref, "\\\r\n") {
			back = ref
		}
		http.Redirect(w, r, back, http.StatusSeeOther)
	}
}

func (s *Server) stop(_ http.ResponseWriter, r *http.Request, v viewer) (string, error) {
	resp, err := s.b.Revoke(r.Context(), v.Caller, "STOP pressed on the dashboard")
	if err != nil {
		return "", err
	}
	if !resp.Revoked {
		return "STOP: there was no approval to revoke; automation is off.", nil
	}
	return fmt.Sprintf("STOP: automation revoked (token %d). The approval panel confirms when every agent has dropped it.", resp.FencingToken), nil
}

func (s *Server) authorize(_ http.ResponseWriter, r *http.Request, v viewer) (string, error) {
	phrase := r.PostFormValue("phrase")
	if _, ok := approval.MatchPhrase(phrase); !ok {
		return "", &approval.PhraseError{Given: phrase}
	}
	reason := strings.TrimSpace(r.PostFormValue("reason"))
	if reason == "" {
		return "", fmt.Errorf("say why automation is needed (reason)")
	}
	ttl, err := time.ParseDuration(r.PostFormValue("ttl"))
	if err != nil || ttl <= 0 {
		return "", fmt.Errorf("ttl %q: want a duration such as 30m or 1h", r.PostFormValue("ttl"))
	}
	a, err := s.b.Authorize(r.Context(), v.Caller, phrase, ttl, reason)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("Automation authorized until %s (token %d).", fmtTime(a.ExpiresAt), a.FencingToken), nil
}

func (s *Server) pause(_ http.ResponseWriter, r *http.Request, v viewer) (string, error) {
	id := r.PostFormValue("id")
	if err := s.b.Pause(r.Context(), v.Caller, id, "paused on the dashboard"); err != nil {
		return "", err
	}
	return "Pause of rollout " + id + " requested: it stops before its next wave.", nil
}

func (s *Server) abort(_ http.ResponseWriter, r *http.Request, v viewer) (string, error) {
	id := r.PostFormValue("id")
	if err := s.b.Abort(r.Context(), v.Caller, id, "aborted on the dashboard"); err != nil {
		return "", err
	}
	return "Abort of rollout " + id + " requested: every host it touched is rolled back.", nil
}

func (s *Server) logout(w http.ResponseWriter, _ *http.Request, _ viewer) (string, error) {
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Path: "/", MaxAge: -1, HttpOnly: true, SameSite: http.SameSiteStrictMode, Secure: !s.DevMode()})
	return "", nil
}

// loginPage shows whom a link signs in, with a button: opening the link
// (a chat's preview, a prefetch) does not spend it; the POST does.
func (s *Server) loginPage(w http.ResponseWriter, r *http.Request) {
	if s.DevMode() && (!loopbackAddr(r.RemoteAddr) || !loopbackHost(r.Host)) {
		s.refuse(w, &authError{http.StatusForbidden, "the dashboard serves without TLS (dev mode): only from this host"})
		return
	}
	tok := r.URL.Query().Get("t")
	c, err := s.signer.verify(kindLink, tok)
	if err != nil {
		s.refuse(w, &authError{http.StatusUnauthorized, err.Error()})
		return
	}
	s.render(w, "login", map[string]any{"Token": tok, "Name": c.Sub, "Roles": joinRoles(c.Roles), "Expires": time.Unix(c.Exp, 0).UTC().Format(time.RFC3339)})
}

// login spends a link and opens a session bound to its identity and roles.
func (s *Server) login(w http.ResponseWriter, r *http.Request) {
	if s.DevMode() && (!loopbackAddr(r.RemoteAddr) || !loopbackHost(r.Host)) {
		s.refuse(w, &authError{http.StatusForbidden, "the dashboard serves without TLS (dev mode): only from this host"})
		return
	}
	if !s.sameOrigin(r) {
		http.Error(w, "refused: this request did not come from the dashboard's own page (Origin)", http.StatusForbidden)
		return
	}
	r.Body = http.MaxBytesReader(w, r.Body, 16<<10)
	c, err := s.signer.verify(kindLink, r.PostFormValue("t"))
	if err != nil {
		s.refuse(w, &authError{http.StatusUnauthorized, err.Error()})
		return
	}
	if !s.signer.spend(c) {
		s.refuse(w, &authError{http.StatusUnauthorized, "this link was used already: run `golive-controller dashboard login` for a new one"})
		return
	}
	exp := s.cfg.Now().Add(s.cfg.SessionTTL)
	tok, err := s.signer.sign(kindSession, claims{Sub: c.Sub, Roles: c.Roles, Exp: exp.Unix()})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	http.SetCookie(w, &http.Cookie{Name: sessionCookie, Value: tok, Path: "/", Expires: exp, HttpOnly: true,
		SameSite: http.SameSiteStrictMode, Secure: !s.DevMode()})
	s.log.Info("dashboard session opened", "identity", c.Sub, "roles", joinRoles(c.Roles), "source", r.RemoteAddr, "until", exp)
	http.Redirect(w, r, "/", http.StatusSeeOther)
}

func fmtTime(t *timestamppb.Timestamp) string {
	if t == nil || (t.Seconds == 0 && t.Nanos == 0) {
		return "—"
	}
	return t.AsTime().UTC().Format("2006-01-02 15:04:05Z")
}

func isoTime(t *timestamppb.Timestamp) string {
	if t == nil || (t.Seconds == 0 && t.Nanos == 0) {
		return ""
	}
	return t.AsTime().UTC().Format(time.RFC3339Nano)
}

func joinRoles(rs []pki.Role) string {
	s := make([]string, len(rs))
	for i, r := range rs {
		s[i] = string(r)
	}
	return strings.Join(s, ", ")
}
