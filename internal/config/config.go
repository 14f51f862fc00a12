// Package config reads the YAML file that stepupd and stepup-gateway share,
// overlays STEPUP_* environment variables, fills defaults and validates.
//
// Every error points at what a person has to edit: the file and line, or the
// environment variable, and the key path inside it.
package config

import (
	"bytes"
	"encoding"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"net/mail"
	"net/netip"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration file. A zero value means "use the
// default"; SetDefaults fills them in.
type Config struct {
	Issuer string `yaml:"issuer"`
	Addr   string `yaml:"addr"`
	// Store is "memory" or a redis:// or rediss:// URL, optionally followed
	// by more comma-separated cluster nodes; the storage package interprets it.
	Store string `yaml:"store"`
	// Secret encrypts keys and TOTP secrets at rest. With the memory store it
	// may stay empty and the server makes one up for the life of the process.
	Secret       string        `yaml:"secret"`
	Clients      []Client      `yaml:"clients"`
	Users        []User        `yaml:"users"`
	Orgs         []Org         `yaml:"orgs"`
	SSOProviders []SSOProvider `yaml:"sso_providers"`
	Services     []Service     `yaml:"services"`
	Gateway      Gateway       `yaml:"gateway"`
	SMTP         SMTP          `yaml:"smtp"`
	Tokens       Tokens        `yaml:"tokens"`
	Login        Login         `yaml:"login"`
	Reminders    Reminders     `yaml:"reminders"`
	// TrustedProxies are the load balancers (addresses or CIDR prefixes)
	// whose X-Forwarded-For is believed, so that per-address throttles see
	// the person's address rather than the balancer's.
	TrustedProxies []string `yaml:"trusted_proxies"`
	Metrics        Metrics  `yaml:"metrics"`
	// API says which tokens Stepup's own endpoints (/api, userinfo, /ssh)
	// take. Its zero values are the server's defaults.
	API API `yaml:"api"`
	// Admins are the user ids of the instance's administrators.
	Admins []string `yaml:"admins"`

	// origin remembers where each key path was set, so that problems found
	// only after decoding (in Validate) still point at a line or variable.
	origin map[string]position
}

// Client is an OAuth2 client registered from config.
type Client struct {
	ID string `yaml:"id"`
	// Name is what pages call the client ("Stepup CLI"); the id otherwise.
	Name   string `yaml:"name"`
	Secret string `yaml:"secret"`
	// SecretHash is the hex SHA-256 of the secret, so the file need not hold
	// the secret itself.
	SecretHash               string   `yaml:"secret_hash"`
	Public                   bool     `yaml:"public"`
	RedirectURIs             []string `yaml:"redirect_uris"`
	PostLogoutRedirectURIs   []string `yaml:"post_logout_redirect_uris"`
	GrantTypes               []string `yaml:"grant_types"`
	ResponseTypes            []string `yaml:"response_types"`
	Scopes                   []string `yaml:"scopes"`
	Audience                 []string `yaml:"audience"`
	TokenEndpointAuthMethod  string   `yaml:"token_endpoint_auth_method"`
	IDTokenSignedResponseAlg string   `yaml:"id_token_signed_response_alg"`
}

// User is a person seeded from config. Exactly one of Password and
// PasswordHash is set; the server hashes Password when it loads users.
type User struct {
	ID           string `yaml:"id"`
	Username     string `yaml:"username"`
	Email        string `yaml:"email"`
	Password     string `yaml:"password"`
	PasswordHash string `yaml:"password_hash"`
	Name         string `yaml:"name"`
}

// Org is an organization seeded from config.
type Org struct {
	ID          string `yaml:"id"`
	Name        string `yaml:"name"`
	MFARequired bool   `yaml:"mfa_required"`
	// PhishingResistant requires MFA with a passkey or security key (amr phr).
	PhishingResistant bool     `yaml:"phishing_resistant"`
	SSOProvider       string   `yaml:"sso_provider"`
	Members           []Member `yaml:"members"`
}

// Member links a user (by id) to an organization.
type Member struct {
	User string `yaml:"user"`
	Role string `yaml:"role"` // owner, admin or member (the default)
}

// SSOProvider is an upstream OpenID provider people can log in through.
type SSOProvider struct {
	// ID appears in amr values as sso:<id>, hence its restricted alphabet.
	ID string `yaml:"id"`
	// Name is what pages call the provider ("ACME Okta"); the id otherwise.
	Name             string   `yaml:"name"`
	Issuer           string   `yaml:"issuer"`
	ClientID         string   `yaml:"client_id"`
	ClientSecret     string   `yaml:"client_secret"`
	Scopes           []string `yaml:"scopes"`
	TrustUpstreamMFA bool     `yaml:"trust_upstream_mfa"`
	// Subjects maps upstream subjects to local user ids, for upstreams whose
	// email addresses cannot be trusted to link accounts.
	Subjects map[string]string `yaml:"subjects"`
	// MaxSessionAge bounds how long an SSO login stays good for refreshes.
	// Zero sets no bound of its own.
	MaxSessionAge Duration `yaml:"max_session_age"`
	// AllowedDomains lets a person whose verified email is at one of these
	// domains get an account at their first login through the provider.
	AllowedDomains []string `yaml:"allowed_domains"`
	// JoinOrg and JoinRole: such accounts join this organization.
	JoinOrg  string `yaml:"join_org"`
	JoinRole string `yaml:"join_role"`
}

// Service is a resource that stepup-gateway protects, and the organization
// whose policy applies to it.
type Service struct {
	ID  string `yaml:"id"`
	Org string `yaml:"org"`
	// SSHAddress is the host:port where the gateway for this service
	// listens, as people reach it; the server tells the CLI, so that
	// `stepup ssh SERVICE` needs no --host or --port. Empty: the CLI's
	// own defaults apply.
	SSHAddress string `yaml:"ssh_address"`
}

// Gateway holds the client credentials stepup-gateway uses to ask the server
// about access.
type Gateway struct {
	ClientID     string `yaml:"client_id"`
	ClientSecret string `yaml:"client_secret"`
}

// SMTP is the outgoing mail relay. Without Addr, mail goes to the log.
type SMTP struct {
	Addr     string `yaml:"addr"`
	From     string `yaml:"from"`
	Username string `yaml:"username"`
	Password string `yaml:"password"`
	// CAFile is a PEM bundle of the CAs the relay's certificate must chain
	// to, for a relay with a private CA; it replaces the system's roots.
	CAFile string `yaml:"ca_file"`
}

// API is who may use Stepup's own API. Empty values take the server's
// defaults (authz.Config), which is where they are kept.
type API struct {
	// Audience: a token must carry one of these in aud. Default: the issuer.
	Audience []string `yaml:"audience"`
	// Clients are the first-party clients whose people's tokens work at
	// /api and /ssh. Default: stepup-cli and console.
	Clients []string `yaml:"clients"`
	// ManageClients may make management calls. Default: Clients.
	ManageClients []string `yaml:"manage_clients"`
	// ManageScope, when set, must also be granted for management calls.
	ManageScope string `yaml:"manage_scope"`
	// TokenTTL is how long an API token works. Default 90 days.
	TokenTTL Duration `yaml:"token_ttl"`
}

// Reminders are the emails asking members to turn on MFA.
type Reminders struct {
	// Interval is the least time between two reminders to one member.
	Interval Duration `yaml:"interval"`
}

// Metrics is the Prometheus endpoint.
type Metrics struct {
	// Token, when set, must be sent as "Authorization: Bearer <token>" to
	// read /metrics; without it /metrics is open, and the load balancer
	// should keep it from the internet (it names organizations).
	Token string `yaml:"token"`
}

// Tokens holds token lifetimes and signing settings.
type Tokens struct {
	AccessTokenTTL  Duration `yaml:"access_token_ttl"`
	IDTokenTTL      Duration `yaml:"id_token_ttl"`
	RefreshTokenTTL Duration `yaml:"refresh_token_ttl"`
	AuthCodeTTL     Duration `yaml:"auth_code_ttl"`
	SessionTTL      Duration `yaml:"session_ttl"` // the browser login session
	SigningAlg      string   `yaml:"signing_alg"` // ES256, RS256 or EdDSA
	KeyRotation     Duration `yaml:"key_rotation"`
}

// Login holds password-guessing throttles.
type Login struct {
	MaxFailuresPerAccount int      `yaml:"max_failures_per_account"`
	MaxFailuresPerAddress int      `yaml:"max_failures_per_address"`
	FailureWindow         Duration `yaml:"failure_window"`
}

// Defaults that SetDefaults fills in.
const (
	DefaultStore                 = "memory"
	DefaultAddr                  = "127.0.0.1:8080"
	DefaultAccessTokenTTL        = Duration(time.Hour)
	DefaultIDTokenTTL            = Duration(time.Hour)
	DefaultRefreshTokenTTL       = Duration(720 * time.Hour)
	DefaultAuthCodeTTL           = Duration(10 * time.Minute)
	DefaultSessionTTL            = Duration(24 * time.Hour)
	DefaultSigningAlg            = "ES256"
	DefaultKeyRotation           = Duration(720 * time.Hour)
	DefaultMaxFailuresPerAccount = 5
	DefaultMaxFailuresPerAddress = 50
	DefaultFailureWindow         = Duration(15 * time.Minute)
	DefaultReminderInterval      = Duration(24 * time.Hour)
)

// Duration is a time.Duration written as a Go duration string ("90s", "1h")
// in YAML and in environment variables.
type Duration time.Duration

// String formats d the way time.Duration does.
func (d Duration) String() string { return time.Duration(d).String() }

// MarshalText writes d as a duration string, so YAML and JSON output can be
// read back.
func (d Duration) MarshalText() ([]byte, error) { return []byte(d.String()), nil }

// UnmarshalText parses a Go duration string; an empty one is zero.
func (d *Duration) UnmarshalText(b []byte) error {
	s := strings.TrimSpace(string(b))
	if s == "" {
		*d = 0
		return nil
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return fmt.Errorf("%q is not a duration; write it like \"90s\", \"15m\" or \"720h\"", s)
	}
	*d = Duration(v)
	return nil
}

// UnmarshalYAML refuses bare numbers: guessing seconds or nanoseconds would
// silently turn 3600 into an hour or into nothing at all.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return fmt.Errorf("want a duration like \"90s\" or \"1h\", got %s", describe(n))
	}
	switch n.ShortTag() {
	case "!!null":
		*d = 0
		return nil
	case "!!int", "!!float":
		if n.Value != "0" {
			return fmt.Errorf("%s has no unit; write it like \"%ss\" or \"%sm\"", n.Value, n.Value, n.Value)
		}
	}
	return d.UnmarshalText([]byte(n.Value))
}

// FieldError is one problem with one setting. Load, Parse, ApplyEnv and
// Validate return these, several joined with errors.Join.
type FieldError struct {
	Source string // file name or STEPUP_* variable; empty when unknown
	Line   int    // 1-based line in Source; 0 when unknown
	Path   string // key path, e.g. clients[1].redirect_uris[0]
	Msg    string
}

// Error reads "source:line: path: msg", leaving out the parts not known.
func (e *FieldError) Error() string {
	var b strings.Builder
	if e.Source != "" {
		b.WriteString(e.Source)
		if e.Line > 0 {
			fmt.Fprintf(&b, ":%d", e.Line)
		}
		b.WriteString(": ")
	}
	if e.Path != "" {
		b.WriteString(e.Path)
		b.WriteString(": ")
	}
	b.WriteString(e.Msg)
	return b.String()
}

type position struct {
	source string
	line   int
}

// Load reads the file at path ("" for none), applies STEPUP_* variables
// looked up through env (os.LookupEnv in production; nil for none), fills
// defaults and validates.
func Load(path string, env func(string) (string, bool)) (*Config, error) {
	c := &Config{}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return nil, err
		}
		if c, err = Parse(data, path); err != nil {
			return nil, err
		}
	}
	if err := c.ApplyEnv(env); err != nil {
		return nil, err
	}
	c.SetDefaults()
	if err := c.Validate(); err != nil {
		return nil, err
	}
	return c, nil
}

// Parse decodes one YAML document strictly: unknown keys, repeated keys and
// values of the wrong type are refused. name (usually the file name) prefixes
// error positions. Parse neither fills defaults nor validates.
func Parse(data []byte, name string) (*Config, error) {
	c := &Config{origin: map[string]position{}}
	root, err := parseDocument(data, name)
	if err != nil {
		return nil, err
	}
	if root == nil {
		return c, nil
	}
	nc := nodeChecker{source: name, pos: c.origin}
	nc.check(root, reflect.TypeFor[Config](), "")
	if len(nc.errs) > 0 {
		return nil, errors.Join(nc.errs...)
	}
	// The checker above exists for its messages; the strict decoder stays the
	// final word on what is accepted.
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		return nil, yamlError(name, err)
	}
	return c, nil
}

// parseDocument returns the top node of the only document in data, or nil
// for a document with no content.
func parseDocument(data []byte, name string) (*yaml.Node, error) {
	dec := yaml.NewDecoder(bytes.NewReader(data))
	var doc yaml.Node
	if err := dec.Decode(&doc); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, nil
		}
		return nil, yamlError(name, err)
	}
	// The decoder would silently drop a second document, and with it
	// whatever the person meant by writing it.
	var extra yaml.Node
	switch err := dec.Decode(&extra); {
	case errors.Is(err, io.EOF):
	case err != nil:
		return nil, yamlError(name, err)
	default:
		return nil, &FieldError{Source: name, Line: extra.Line, Msg: "a second YAML document; the configuration is a single document"}
	}
	root := &doc
	if doc.Kind == yaml.DocumentNode {
		if len(doc.Content) == 0 {
			return nil, nil
		}
		root = doc.Content[0]
	}
	if root.Kind == yaml.ScalarNode && root.ShortTag() == "!!null" {
		return nil, nil
	}
	return root, nil
}

var yamlLine = regexp.MustCompile(`(?s)^(?:yaml: )?line (\d+): (.*)$`)

// yamlError turns yaml.v3's "yaml: line N: msg" into "name:N: msg".
func yamlError(name string, err error) error {
	var msgs []string
	if te, ok := errors.AsType[*yaml.TypeError](err); ok {
		msgs = te.Errors
	} else {
		msgs = []string{err.Error()}
	}
	var errs []error
	for _, m := range msgs {
		fe := &FieldError{Source: name, Msg: strings.TrimPrefix(m, "yaml: ")}
		if sub := yamlLine.FindStringSubmatch(m); sub != nil {
			fe.Line, _ = strconv.Atoi(sub[1])
			fe.Msg = sub[2]
		}
		errs = append(errs, fe)
	}
	return errors.Join(errs...)
}

// nodeChecker walks a YAML node tree alongside the Go type it will decode
// into. yaml.v3's own errors carry a line but no key path, and its
// Unmarshaler errors carry neither, so the checker produces the messages and
// records where each key path was written.
type nodeChecker struct {
	source string
	pos    map[string]position
	errs   []error
}

func (w *nodeChecker) fail(n *yaml.Node, path, format string, args ...any) {
	w.errs = append(w.errs, &FieldError{Source: w.source, Line: n.Line, Path: path, Msg: fmt.Sprintf(format, args...)})
}

func (w *nodeChecker) check(n *yaml.Node, t reflect.Type, path string) {
	if n.Kind == yaml.AliasNode && n.Alias != nil {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.ShortTag() == "!!null" {
		return
	}
	if isScalar(t) {
		if n.Kind != yaml.ScalarNode {
			w.fail(n, path, "want a single value, got %s", describe(n))
			return
		}
		if _, msg := decodeScalar(n, t); msg != "" {
			w.fail(n, path, "%s", msg)
		}
		return
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			w.fail(n, path, "want a mapping of keys, got %s", describe(n))
			return
		}
		w.structFields(n, t, path, map[string]int{})
	case reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			w.fail(n, path, "want a list, got %s", describe(n))
			return
		}
		for i, item := range n.Content {
			p := fmt.Sprintf("%s[%d]", path, i)
			w.pos[p] = position{w.source, item.Line}
			w.check(item, t.Elem(), p)
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			w.fail(n, path, "want a mapping, got %s", describe(n))
			return
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			p := fmt.Sprintf("%s[%q]", path, k.Value)
			if k.Kind != yaml.ScalarNode {
				w.fail(k, path, "keys must be plain strings, got %s", describe(k))
				continue
			}
			if first, ok := seen[k.Value]; ok {
				w.fail(k, p, "repeated; first given on line %d", first)
				continue
			}
			seen[k.Value] = k.Line
			w.pos[p] = position{w.source, k.Line}
			w.check(v, t.Elem(), p)
		}
	}
}

// structFields checks a mapping against struct t. seen is shared with merged
// (<<) mappings so that explicit keys may override merged ones.
func (w *nodeChecker) structFields(n *yaml.Node, t reflect.Type, path string, seen map[string]int) {
	fields := yamlFields(t)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		if k.Kind == yaml.ScalarNode && k.ShortTag() == "!!merge" {
			w.merge(v, t, path)
			continue
		}
		if k.Kind != yaml.ScalarNode {
			w.fail(k, path, "keys must be plain names, got %s", describe(k))
			continue
		}
		p := joinPath(path, k.Value)
		f, ok := fields[k.Value]
		if !ok {
			w.fail(k, p, "unknown key; %s", suggest(k.Value, fields))
			continue
		}
		if first, ok := seen[k.Value]; ok {
			w.fail(k, p, "repeated; first given on line %d", first)
			continue
		}
		seen[k.Value] = k.Line
		w.pos[p] = position{w.source, k.Line}
		w.check(v, f.typ, p)
	}
}

func (w *nodeChecker) merge(v *yaml.Node, t reflect.Type, path string) {
	if v.Kind == yaml.AliasNode && v.Alias != nil {
		v = v.Alias
	}
	switch v.Kind {
	case yaml.MappingNode:
		// Merged keys get a fresh seen set: the explicit keys beside <<
		// legitimately override them.
		w.structFields(v, t, path, map[string]int{})
	case yaml.SequenceNode:
		for _, m := range v.Content {
			w.merge(m, t, path)
		}
	default:
		w.fail(v, path, "<< merges a mapping, got %s", describe(v))
	}
}

func describe(n *yaml.Node) string {
	switch n.Kind {
	case yaml.SequenceNode:
		return "a list"
	case yaml.MappingNode:
		return "a mapping"
	case yaml.ScalarNode:
		return fmt.Sprintf("the value %q", n.Value)
	}
	return "something else"
}

func joinPath(parent, key string) string {
	if parent == "" {
		return key
	}
	return parent + "." + key
}

// parentPath strips the last segment of a key path: "a.b[2]" gives "a.b".
// Map keys are quoted and may themselves hold dots or brackets.
func parentPath(p string) (string, bool) {
	cut, quoted := -1, false
	for i := 0; i < len(p); i++ {
		switch c := p[i]; {
		case quoted && c == '\\':
			i++
		case c == '"':
			quoted = !quoted
		case !quoted && (c == '.' || c == '['):
			cut = i
		}
	}
	if cut < 0 {
		return "", false
	}
	return p[:cut], true
}

type fieldInfo struct {
	index []int
	typ   reflect.Type
}

// yamlFields lists the exported fields of struct t by their YAML key.
func yamlFields(t reflect.Type) map[string]fieldInfo {
	fields := map[string]fieldInfo{}
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "-" {
			continue
		}
		if name == "" {
			name = strings.ToLower(f.Name)
		}
		fields[name] = fieldInfo{index: f.Index, typ: f.Type}
	}
	return fields
}

// suggest helps with the usual cause of an unknown key, a typo.
func suggest(key string, fields map[string]fieldInfo) string {
	names := slices.Sorted(maps.Keys(fields))
	best, bestDist := "", 3
	for _, name := range names {
		if d := editDistance(key, name); d < bestDist {
			best, bestDist = name, d
		}
	}
	if best != "" {
		return fmt.Sprintf("did you mean %q?", best)
	}
	return "known keys here: " + strings.Join(names, ", ")
}

func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

var (
	yamlUnmarshaler = reflect.TypeFor[yaml.Unmarshaler]()
	textUnmarshaler = reflect.TypeFor[encoding.TextUnmarshaler]()
)

// isScalar reports whether a value of type t is written as one YAML scalar
// and so gets one environment variable of its own.
func isScalar(t reflect.Type) bool {
	if p := reflect.PointerTo(t); p.Implements(yamlUnmarshaler) || p.Implements(textUnmarshaler) {
		return true
	}
	switch t.Kind() {
	case reflect.Bool, reflect.String, reflect.Float32, reflect.Float64,
		reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return true
	}
	return false
}

// decodeScalar decodes n into a new value of type t, returning a message
// fit for a person when it cannot.
func decodeScalar(n *yaml.Node, t reflect.Type) (reflect.Value, string) {
	v := reflect.New(t)
	err := n.Decode(v.Interface())
	if err == nil {
		return v.Elem(), ""
	}
	if _, ok := errors.AsType[*yaml.TypeError](err); !ok {
		return v.Elem(), err.Error() // from our own UnmarshalYAML
	}
	switch t.Kind() {
	case reflect.Bool:
		return v.Elem(), fmt.Sprintf("%q is not true or false", n.Value)
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return v.Elem(), fmt.Sprintf("%q is not a whole number in range", n.Value)
	case reflect.Float32, reflect.Float64:
		return v.Elem(), fmt.Sprintf("%q is not a number", n.Value)
	}
	return v.Elem(), fmt.Sprintf("%q is not a valid %s", n.Value, t)
}

// envSetting is one STEPUP_* variable and the key it overrides.
type envSetting struct {
	name  string
	path  string
	index []int
	typ   reflect.Type
}

// envSettings derives the variables from the yaml tags, so a new key gets
// its variable without anyone keeping a list. Scalars get one variable
// each; lists and maps are given whole, as YAML or JSON.
func envSettings() []envSetting {
	var out []envSetting
	var walk func(t reflect.Type, index []int, segs []string)
	walk = func(t reflect.Type, index []int, segs []string) {
		fields := yamlFields(t)
		for _, k := range slices.Sorted(maps.Keys(fields)) {
			f := fields[k]
			idx := append(slices.Clone(index), f.index...)
			s := append(slices.Clone(segs), k)
			if f.typ.Kind() == reflect.Struct && !isScalar(f.typ) {
				walk(f.typ, idx, s)
				continue
			}
			out = append(out, envSetting{
				name:  "STEPUP_" + strings.ToUpper(strings.Join(s, "_")),
				path:  strings.Join(s, "."),
				index: idx,
				typ:   f.typ,
			})
		}
	}
	walk(reflect.TypeFor[Config](), nil, nil)
	return out
}

// ApplyEnv overrides settings from STEPUP_* variables looked up through env
// (nil means none). A variable that is set but empty resets its key to the
// zero value, and so to the default, which lets a deployment blank out a
// value from the file.
func (c *Config) ApplyEnv(env func(string) (string, bool)) error {
	if env == nil {
		return nil
	}
	if c.origin == nil {
		c.origin = map[string]position{}
	}
	root := reflect.ValueOf(c).Elem()
	var errs []error
	for _, s := range envSettings() {
		raw, ok := env(s.name)
		if !ok {
			continue
		}
		field := root.FieldByIndex(s.index)
		if isScalar(s.typ) {
			v, err := envScalar(raw, s)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			field.Set(v)
			c.origin[s.path] = position{source: s.name}
			continue
		}
		v, pos, err := envWhole(raw, s)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		field.Set(v)
		for p := range c.origin {
			if p == s.path || strings.HasPrefix(p, s.path+".") || strings.HasPrefix(p, s.path+"[") {
				delete(c.origin, p)
			}
		}
		for p, at := range pos {
			c.origin[p] = at
		}
		c.origin[s.path] = position{source: s.name}
	}
	return errors.Join(errs...)
}

func envScalar(raw string, s envSetting) (reflect.Value, error) {
	if raw == "" {
		return reflect.Zero(s.typ), nil
	}
	// Strings are taken verbatim: a secret may well look like YAML.
	if s.typ.Kind() == reflect.String && !reflect.PointerTo(s.typ).Implements(yamlUnmarshaler) {
		return reflect.ValueOf(raw).Convert(s.typ), nil
	}
	v, msg := decodeScalar(&yaml.Node{Kind: yaml.ScalarNode, Value: raw}, s.typ)
	if msg != "" {
		return v, &FieldError{Source: s.name, Path: s.path, Msg: msg}
	}
	return v, nil
}

func envWhole(raw string, s envSetting) (reflect.Value, map[string]position, error) {
	pos := map[string]position{}
	if strings.TrimSpace(raw) == "" {
		return reflect.Zero(s.typ), pos, nil
	}
	root, err := parseDocument([]byte(raw), s.name)
	if err != nil {
		return reflect.Value{}, nil, err
	}
	v := reflect.New(s.typ)
	if root == nil {
		return v.Elem(), pos, nil
	}
	nc := nodeChecker{source: s.name, pos: pos}
	nc.check(root, s.typ, s.path)
	if len(nc.errs) > 0 {
		return reflect.Value{}, nil, errors.Join(nc.errs...)
	}
	dec := yaml.NewDecoder(strings.NewReader(raw))
	dec.KnownFields(true)
	if err := dec.Decode(v.Interface()); err != nil {
		return reflect.Value{}, nil, yamlError(s.name, err)
	}
	return v.Elem(), pos, nil
}

// SetDefaults fills every zero setting that has a default. It never changes
// a value that is set, so calling it twice is harmless.
func (c *Config) SetDefaults() {
	if c.Store == "" {
		c.Store = DefaultStore
	}
	if c.Addr == "" {
		c.Addr = DefaultAddr
	}
	// A loopback listener can only be reached as itself, so the issuer is
	// known; any other address sits behind names only the operator knows.
	if c.Issuer == "" {
		if host, _, err := net.SplitHostPort(c.Addr); err == nil && isLoopback(host) {
			c.Issuer = "http://" + c.Addr
		}
	}
	for i := range c.Clients {
		cl := &c.Clients[i]
		if cl.GrantTypes == nil && len(cl.RedirectURIs) > 0 {
			cl.GrantTypes = []string{"authorization_code", "refresh_token"}
		}
		if cl.ResponseTypes == nil {
			cl.ResponseTypes = []string{"code"}
		}
		if cl.TokenEndpointAuthMethod == "" {
			if cl.Public {
				cl.TokenEndpointAuthMethod = "none"
			} else {
				cl.TokenEndpointAuthMethod = "client_secret_basic"
			}
		}
	}
	for i := range c.Orgs {
		for j := range c.Orgs[i].Members {
			if m := &c.Orgs[i].Members[j]; m.Role == "" {
				m.Role = "member" // the least privilege
			}
		}
	}
	for i := range c.SSOProviders {
		if p := &c.SSOProviders[i]; p.Scopes == nil {
			p.Scopes = []string{"openid", "email", "profile"}
		}
	}
	t := &c.Tokens
	setDuration(&t.AccessTokenTTL, DefaultAccessTokenTTL)
	setDuration(&t.IDTokenTTL, DefaultIDTokenTTL)
	setDuration(&t.RefreshTokenTTL, DefaultRefreshTokenTTL)
	setDuration(&t.AuthCodeTTL, DefaultAuthCodeTTL)
	setDuration(&t.SessionTTL, DefaultSessionTTL)
	setDuration(&t.KeyRotation, DefaultKeyRotation)
	if t.SigningAlg == "" {
		t.SigningAlg = DefaultSigningAlg
	}
	if c.Login.MaxFailuresPerAccount == 0 {
		c.Login.MaxFailuresPerAccount = DefaultMaxFailuresPerAccount
	}
	if c.Login.MaxFailuresPerAddress == 0 {
		c.Login.MaxFailuresPerAddress = DefaultMaxFailuresPerAddress
	}
	setDuration(&c.Login.FailureWindow, DefaultFailureWindow)
	setDuration(&c.Reminders.Interval, DefaultReminderInterval)
}

func setDuration(d *Duration, def Duration) {
	if *d == 0 {
		*d = def
	}
}

var (
	providerID   = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]*$`)
	grantTypes   = []string{"authorization_code", "refresh_token", "client_credentials", "api_token", "urn:ietf:params:oauth:grant-type:device_code"}
	authMethods  = []string{"none", "client_secret_basic", "client_secret_post"}
	signingAlgs  = []string{"ES256", "RS256", "EdDSA"}
	roles        = []string{"owner", "admin", "member"}
	responseType = "code"
)

// validator collects every problem so one run of stepupd shows them all.
type validator struct {
	c    *Config
	errs []error
}

func (v *validator) errorf(path, format string, args ...any) {
	e := &FieldError{Path: path, Msg: fmt.Sprintf(format, args...)}
	for p := path; ; {
		if at, ok := v.c.origin[p]; ok {
			e.Source, e.Line = at.source, at.line
			break
		}
		parent, ok := parentPath(p)
		if !ok {
			break
		}
		p = parent
	}
	v.errs = append(v.errs, e)
}

// unique reports a repeated value at path; first maps values to the path
// that used them first.
func (v *validator) unique(first map[string]string, value, path, what string) {
	if prev, ok := first[value]; ok {
		v.errorf(path, "%s %q is already used by %s", what, value, prev)
		return
	}
	first[value] = path
}

// Validate checks the configuration as the server will use it, after
// SetDefaults, and returns every problem found joined into one error.
func (c *Config) Validate() error {
	v := &validator{c: c}
	v.server()
	v.clients()
	users := v.users()
	providers := v.providers(users)
	orgs := v.orgs(users, providers)
	v.services(orgs)
	v.smtp()
	v.tokens()
	v.api(users)
	for i, id := range v.c.Admins {
		if !users[id] {
			v.errorf(fmt.Sprintf("admins[%d]", i), "no user with id %q", id)
		}
	}
	return errors.Join(v.errs...)
}

// defaultAPIClients are authz.DefaultAPIClients, the first-party clients
// when api.clients names none.
var defaultAPIClients = []string{"stepup-cli", "console"}

func (v *validator) api(users map[string]bool) {
	clients := map[string]bool{}
	for i, cl := range v.c.Clients {
		clients[cl.ID] = true
		// A client_credentials token's sub is the client's id: were it also
		// a person's, the client would act as that person.
		if users[cl.ID] {
			v.errorf(fmt.Sprintf("clients[%d].id", i), "%q is also a user id; give the client or the user another id", cl.ID)
		}
	}
	a := v.c.API
	for _, list := range []struct {
		path string
		ids  []string
	}{{"api.clients", a.Clients}, {"api.manage_clients", a.ManageClients}} {
		for j, id := range list.ids {
			if !clients[id] {
				v.errorf(fmt.Sprintf("%s[%d]", list.path, j), "%q is not the id of a clients entry", id)
			}
		}
	}
	firstParty := a.Clients
	if len(firstParty) == 0 {
		firstParty = defaultAPIClients
	}
	for j, id := range a.ManageClients {
		if !slices.Contains(firstParty, id) {
			v.errorf(fmt.Sprintf("api.manage_clients[%d]", j), "%q is not in api.clients: a client that manages must be first-party", id)
		}
	}
	for j, aud := range a.Audience {
		if aud == "" {
			v.errorf(fmt.Sprintf("api.audience[%d]", j), "is empty")
		}
	}
	if s := a.ManageScope; strings.ContainsAny(s, " \t\r\n\"\\") {
		v.errorf("api.manage_scope", "%q is not a scope name", s)
	}
	if a.TokenTTL < 0 {
		v.errorf("api.token_ttl", "must be positive, got %s", a.TokenTTL)
	}
}

func (v *validator) server() {
	c := v.c
	if c.Issuer == "" {
		v.errorf("issuer", "is required unless addr is a loopback address")
	} else if msg := checkIssuerURL(c.Issuer); msg != "" {
		v.errorf("issuer", "%s", msg)
	}
	if msg := checkHostPort(c.Addr); msg != "" {
		v.errorf("addr", "%s", msg)
	}
	if msg := checkStore(c.Store); msg != "" {
		v.errorf("store", "%s", msg)
	}
	for i, p := range c.TrustedProxies {
		if _, err := ParseProxy(p); err != nil {
			v.errorf(fmt.Sprintf("trusted_proxies[%d]", i), "%q is not an IP address or CIDR prefix like 10.0.0.0/8", p)
		}
	}
	switch {
	case c.Secret == "" && c.Store != "memory":
		v.errorf("secret", "is required with a shared store, so every replica decrypts the same keys")
	case c.Secret != "" && len(c.Secret) < 16:
		v.errorf("secret", "is %d characters long; use at least 16", len(c.Secret))
	}
}

func (v *validator) clients() {
	ids := map[string]string{}
	for i, cl := range v.c.Clients {
		p := fmt.Sprintf("clients[%d]", i)
		if cl.ID == "" {
			v.errorf(p+".id", "is required")
		} else {
			v.unique(ids, cl.ID, p+".id", "client id")
		}
		if cl.Public {
			if cl.Secret != "" {
				v.errorf(p+".secret", "a public client has no secret; remove it or drop public: true")
			}
			if cl.SecretHash != "" {
				v.errorf(p+".secret_hash", "a public client has no secret; remove it or drop public: true")
			}
		} else {
			switch {
			case cl.Secret == "" && cl.SecretHash == "":
				v.errorf(p, "a confidential client needs secret or secret_hash (or public: true)")
			case cl.Secret != "" && cl.SecretHash != "":
				v.errorf(p+".secret_hash", "give secret or secret_hash, not both")
			}
		}
		if h := cl.SecretHash; h != "" {
			if b, err := hex.DecodeString(h); err != nil || len(b) != 32 {
				v.errorf(p+".secret_hash", "must be 64 hex characters, the SHA-256 of the secret")
			}
		}
		for j, u := range cl.RedirectURIs {
			if msg := checkRedirectURI(u); msg != "" {
				v.errorf(fmt.Sprintf("%s.redirect_uris[%d]", p, j), "%s", msg)
			}
		}
		for j, u := range cl.PostLogoutRedirectURIs {
			if msg := checkRedirectURI(u); msg != "" {
				v.errorf(fmt.Sprintf("%s.post_logout_redirect_uris[%d]", p, j), "%s", msg)
			}
		}
		for j, g := range cl.GrantTypes {
			if !slices.Contains(grantTypes, g) {
				v.errorf(fmt.Sprintf("%s.grant_types[%d]", p, j), "%q is not supported; use %s", g, strings.Join(grantTypes, ", "))
			}
		}
		if slices.Contains(cl.GrantTypes, "authorization_code") && len(cl.RedirectURIs) == 0 {
			v.errorf(p+".redirect_uris", "the authorization_code grant needs at least one redirect URI")
		}
		if slices.Contains(cl.GrantTypes, "client_credentials") && cl.Public {
			v.errorf(p+".grant_types", "client_credentials needs a confidential client; a public one cannot prove who it is")
		}
		for j, r := range cl.ResponseTypes {
			if r != responseType {
				v.errorf(fmt.Sprintf("%s.response_types[%d]", p, j), "%q is not supported; only %q is", r, responseType)
			}
		}
		switch m := cl.TokenEndpointAuthMethod; {
		case !slices.Contains(authMethods, m):
			v.errorf(p+".token_endpoint_auth_method", "%q is not supported; use client_secret_basic or client_secret_post (none for public clients)", m)
		case cl.Public && m != "none":
			v.errorf(p+".token_endpoint_auth_method", "a public client has no secret to send; use none")
		case !cl.Public && m == "none":
			v.errorf(p+".token_endpoint_auth_method", "none is for public clients; use client_secret_basic or client_secret_post")
		}
		if a := cl.IDTokenSignedResponseAlg; a != "" && !slices.Contains(signingAlgs, a) {
			v.errorf(p+".id_token_signed_response_alg", "%q is not supported; use %s", a, strings.Join(signingAlgs, ", "))
		}
		for j, s := range cl.Scopes {
			if s == "" || strings.ContainsAny(s, " \t\r\n\"\\") {
				v.errorf(fmt.Sprintf("%s.scopes[%d]", p, j), "%q is not a scope name", s)
			}
		}
		for j, a := range cl.Audience {
			if a == "" {
				v.errorf(fmt.Sprintf("%s.audience[%d]", p, j), "is empty")
			}
		}
	}
}

// users returns the set of user ids, for the checks that refer to them.
func (v *validator) users() map[string]bool {
	ids, names, emails := map[string]string{}, map[string]string{}, map[string]string{}
	known := map[string]bool{}
	for i, u := range v.c.Users {
		p := fmt.Sprintf("users[%d]", i)
		if u.ID == "" {
			v.errorf(p+".id", "is required")
		} else {
			v.unique(ids, u.ID, p+".id", "user id")
			known[u.ID] = true
		}
		if u.Username == "" {
			v.errorf(p+".username", "is required")
		} else {
			v.unique(names, u.Username, p+".username", "username")
		}
		switch {
		case u.Password == "" && u.PasswordHash == "":
			v.errorf(p, "give password or password_hash")
		case u.Password != "" && u.PasswordHash != "":
			v.errorf(p+".password_hash", "give password or password_hash, not both")
		}
		if u.PasswordHash != "" && !strings.HasPrefix(u.PasswordHash, "$argon2id$") {
			v.errorf(p+".password_hash", "must be an argon2id hash starting with $argon2id$")
		}
		if u.Email != "" {
			if !strings.Contains(u.Email, "@") {
				v.errorf(p+".email", "%q is not an email address", u.Email)
			} else {
				// SSO links accounts by email, which must therefore name one user.
				v.unique(emails, strings.ToLower(u.Email), p+".email", "email")
			}
		}
	}
	return known
}

func (v *validator) providers(users map[string]bool) map[string]bool {
	ids := map[string]string{}
	known := map[string]bool{}
	for i, sp := range v.c.SSOProviders {
		p := fmt.Sprintf("sso_providers[%d]", i)
		switch {
		case sp.ID == "":
			v.errorf(p+".id", "is required")
		case !providerID.MatchString(sp.ID):
			v.errorf(p+".id", "%q must be lower-case letters, digits, - and _, starting with a letter or digit (it becomes the amr value sso:<id>)", sp.ID)
		default:
			v.unique(ids, sp.ID, p+".id", "provider id")
			known[sp.ID] = true
		}
		if sp.Issuer == "" {
			v.errorf(p+".issuer", "is required")
		} else if msg := checkIssuerURL(sp.Issuer); msg != "" {
			v.errorf(p+".issuer", "%s", msg)
		}
		if sp.ClientID == "" {
			v.errorf(p+".client_id", "is required")
		}
		if len(sp.Scopes) > 0 && !slices.Contains(sp.Scopes, "openid") {
			v.errorf(p+".scopes", "must include openid, or the provider returns no ID token")
		}
		for _, sub := range slices.Sorted(maps.Keys(sp.Subjects)) {
			user := sp.Subjects[sub]
			subPath := fmt.Sprintf("%s.subjects[%q]", p, sub)
			switch {
			case sub == "":
				v.errorf(subPath, "the upstream subject is empty")
			case !users[user]:
				v.errorf(subPath, "no user with id %q", user)
			}
		}
		if len(sp.AllowedDomains) > 0 && len(sp.Subjects) > 0 {
			v.errorf(p+".allowed_domains", "cannot be used with subjects: a provider whose emails do not link accounts cannot make them either")
		}
		for j, d := range sp.AllowedDomains {
			if d == "" || strings.ContainsAny(d, "@ \t") || d != strings.ToLower(d) {
				v.errorf(fmt.Sprintf("%s.allowed_domains[%d]", p, j), "%q is not a lower-case domain like example.com", d)
			}
		}
		if sp.JoinRole != "" && !slices.Contains(roles, sp.JoinRole) {
			v.errorf(p+".join_role", "%q is not a role; use owner, admin or member", sp.JoinRole)
		}
		if sp.JoinRole != "" && sp.JoinOrg == "" {
			v.errorf(p+".join_role", "needs join_org")
		}
		if sp.MaxSessionAge < 0 {
			v.errorf(p+".max_session_age", "must be positive, got %s", sp.MaxSessionAge)
		}
	}
	return known
}

func (v *validator) orgs(users, providers map[string]bool) map[string]bool {
	ids := map[string]string{}
	known := map[string]bool{}
	for i, o := range v.c.Orgs {
		p := fmt.Sprintf("orgs[%d]", i)
		if o.ID == "" {
			v.errorf(p+".id", "is required")
		} else {
			v.unique(ids, o.ID, p+".id", "org id")
			known[o.ID] = true
		}
		if o.SSOProvider != "" && !providers[o.SSOProvider] {
			v.errorf(p+".sso_provider", "%q is not the id of an sso_providers entry", o.SSOProvider)
		}
		members := map[string]string{}
		for j, m := range o.Members {
			mp := fmt.Sprintf("%s.members[%d]", p, j)
			switch {
			case m.User == "":
				v.errorf(mp+".user", "is required")
			case !users[m.User]:
				v.errorf(mp+".user", "no user with id %q", m.User)
			default:
				v.unique(members, m.User, mp+".user", "member")
			}
			if !slices.Contains(roles, m.Role) {
				v.errorf(mp+".role", "%q is not a role; use owner, admin or member", m.Role)
			}
		}
	}
	return known
}

func (v *validator) services(orgs map[string]bool) {
	ids := map[string]string{}
	for i, s := range v.c.Services {
		p := fmt.Sprintf("services[%d]", i)
		if s.ID == "" {
			v.errorf(p+".id", "is required")
		} else {
			v.unique(ids, s.ID, p+".id", "service id")
		}
		switch {
		case s.Org == "":
			v.errorf(p+".org", "is required")
		case !orgs[s.Org]:
			v.errorf(p+".org", "%q is not the id of an orgs entry", s.Org)
		}
		if s.SSHAddress != "" {
			if msg := checkSSHAddress(s.SSHAddress); msg != "" {
				v.errorf(p+".ssh_address", "%s", msg)
			}
		}
	}
}

// checkSSHAddress checks where people's ssh connects: unlike a listen
// address, it needs a host, and a port ssh can dial.
func checkSSHAddress(addr string) string {
	const want = "want host:port where the service's gateway listens, e.g. ssh.example.com:2222 or 127.0.0.1:2222"
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("%q is not host:port; %s", addr, want)
	}
	if host == "" {
		return fmt.Sprintf("%q names no host; %s", addr, want)
	}
	if strings.ContainsAny(host, " \t/@") {
		return fmt.Sprintf("%q: %q is not a host name or address; %s", addr, host, want)
	}
	if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
		return fmt.Sprintf("%q has no port from 1 to 65535; %s", addr, want)
	}
	return ""
}

func (v *validator) smtp() {
	s := v.c.SMTP
	if s.Addr == "" {
		return
	}
	if msg := checkHostPort(s.Addr); msg != "" {
		v.errorf("smtp.addr", "%s", msg)
	}
	if s.From == "" {
		v.errorf("smtp.from", "is required when smtp.addr is set")
	} else if _, err := mail.ParseAddress(s.From); err != nil {
		v.errorf("smtp.from", "%q is not a mail address like \"Stepup <no-reply@example.com>\"", s.From)
	}
}

func (v *validator) tokens() {
	t := v.c.Tokens
	for _, d := range []struct {
		path string
		d    Duration
	}{
		{"tokens.access_token_ttl", t.AccessTokenTTL},
		{"tokens.id_token_ttl", t.IDTokenTTL},
		{"tokens.refresh_token_ttl", t.RefreshTokenTTL},
		{"tokens.auth_code_ttl", t.AuthCodeTTL},
		{"tokens.session_ttl", t.SessionTTL},
		{"tokens.key_rotation", t.KeyRotation},
		{"login.failure_window", v.c.Login.FailureWindow},
		{"reminders.interval", v.c.Reminders.Interval},
	} {
		if d.d <= 0 {
			v.errorf(d.path, "must be positive, got %s", d.d)
		}
	}
	if !slices.Contains(signingAlgs, t.SigningAlg) {
		v.errorf("tokens.signing_alg", "%q is not supported; use %s", t.SigningAlg, strings.Join(signingAlgs, ", "))
	}
	if n := v.c.Login.MaxFailuresPerAccount; n <= 0 {
		v.errorf("login.max_failures_per_account", "must be positive, got %d", n)
	}
	if n := v.c.Login.MaxFailuresPerAddress; n <= 0 {
		v.errorf("login.max_failures_per_address", "must be positive, got %d", n)
	}
}

// isLoopback accepts the names RFC 8252 native apps use for themselves.
// ParseProxy reads one trusted_proxies entry: an address stands for itself.
func ParseProxy(s string) (netip.Prefix, error) {
	if a, err := netip.ParseAddr(s); err == nil {
		return netip.PrefixFrom(a, a.BitLen()), nil
	}
	p, err := netip.ParsePrefix(s)
	return p.Masked(), err
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

// checkHTTPURL parses an absolute http(s) URL or says what is wrong with it.
// Plain http is refused except on loopback, where nothing crosses a network.
func checkHTTPURL(raw string) (*url.URL, string) {
	u, err := url.Parse(raw)
	if err != nil {
		return nil, fmt.Sprintf("%q is not a URL", raw)
	}
	if u.Scheme != "http" && u.Scheme != "https" {
		return nil, fmt.Sprintf("%q is not an http(s) URL", raw)
	}
	if u.Host == "" {
		return nil, fmt.Sprintf("%q has no host", raw)
	}
	if u.User != nil {
		return nil, fmt.Sprintf("%q must not carry a user name or password", raw)
	}
	if u.Fragment != "" || strings.Contains(raw, "#") {
		return nil, fmt.Sprintf("%q must not have a #fragment", raw)
	}
	if u.Scheme == "http" && !isLoopback(u.Hostname()) {
		return nil, fmt.Sprintf("%q uses http on a host that is not loopback (127.0.0.1, [::1], localhost); use https", raw)
	}
	return u, ""
}

func checkIssuerURL(raw string) string {
	u, msg := checkHTTPURL(raw)
	if msg != "" {
		return msg
	}
	if u.RawQuery != "" || u.ForceQuery {
		return fmt.Sprintf("%q must not have a ?query", raw)
	}
	return ""
}

func checkRedirectURI(raw string) string {
	_, msg := checkHTTPURL(raw)
	return msg
}

func checkHostPort(addr string) string {
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return fmt.Sprintf("%q is not host:port (e.g. 127.0.0.1:8080 or :8080)", addr)
	}
	if _, err := strconv.ParseUint(port, 10, 16); err != nil {
		return fmt.Sprintf("%q has no valid port number", addr)
	}
	return ""
}

// checkStore looks at schemes only: the storage package owns the rest of the
// URL syntax, and the URL may hold a password that must not reach the logs.
func checkStore(store string) string {
	if store == "memory" {
		return ""
	}
	for i, node := range strings.Split(store, ",") {
		node = strings.TrimSpace(node)
		scheme, _, hasScheme := strings.Cut(node, "://")
		switch {
		case node == "":
			return "has an empty entry in its comma-separated list"
		case !hasScheme && i == 0:
			return `want "memory" or a redis:// or rediss:// URL`
		case hasScheme && scheme != "redis" && scheme != "rediss":
			return fmt.Sprintf("scheme %q is not supported; want \"memory\" or a redis:// or rediss:// URL", scheme)
		}
	}
	return ""
}
