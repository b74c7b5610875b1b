// Command pgx prints what github.com/jackc/pgx/v5's pgconn.ParseConfig makes of connection
// strings, for the webhook's differential test (tests/pgx_conninfo.rs): the engine's reading
// of POSTGRESQL_URL (src/mutate/conninfo.rs) must agree with it.
//
// It reads a JSON array of cases from stdin, each a connection string and the PG* environment
// variables the container would have, and writes a JSON array with, per case, the password
// pgx would use, the TLS behaviour its sslmode gives (disable, allow, prefer, require,
// verify-ca, verify-full), the other settings, or the kind of error. The environment is the
// program's own: every PG* variable pgx reads is cleared, then only the case's are set (and
// PGHOST=db, so that no case falls back to a Unix socket, where pgx ignores sslmode); HOME is
// a fresh directory holding only a service file with one service, "svc" (password
// "from-service", sslmode allow), and no ~/.pgpass or client certificates.
package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

// pgEnv lists the variables pgconn's parseEnvSettings reads.
var pgEnv = []string{
	"PGHOST", "PGPORT", "PGDATABASE", "PGUSER", "PGPASSWORD", "PGPASSFILE", "PGAPPNAME",
	"PGCONNECT_TIMEOUT", "PGSSLMODE", "PGSSLKEY", "PGSSLCERT", "PGSSLCERTMODE", "PGSSLSNI",
	"PGSSLROOTCERT", "PGSSLPASSWORD", "PGSSLNEGOTIATION", "PGTARGETSESSIONATTRS", "PGSERVICE",
	"PGSERVICEFILE", "PGTZ", "PGOPTIONS", "PGMINPROTOCOLVERSION", "PGMAXPROTOCOLVERSION",
	"PGCHANNELBINDING", "PGREQUIREAUTH",
}

type testCase struct {
	Conn string            `json:"conn"`
	Env  map[string]string `json:"env"`
}

type result struct {
	Error    string            `json:"error,omitempty"`
	Password string            `json:"password"`
	TLS      string            `json:"tls,omitempty"`
	User     string            `json:"user"`
	Database string            `json:"database"`
	Host     string            `json:"host"`
	Port     uint16            `json:"port"`
	Params   map[string]string `json:"params,omitempty"`
}

// tlsMode names the sslmode whose TLS configuration pgconn built (configTLS).
func tlsMode(c *pgconn.Config) string {
	fallbackTLS := len(c.Fallbacks) > 0 && c.Fallbacks[0].TLSConfig != nil
	switch t := c.TLSConfig; {
	case t == nil && fallbackTLS:
		return "allow"
	case t == nil:
		return "disable"
	case len(c.Fallbacks) > 0 && !fallbackTLS:
		return "prefer"
	case !t.InsecureSkipVerify:
		return "verify-full"
	case t.VerifyPeerCertificate != nil:
		return "verify-ca"
	default:
		return "require"
	}
}

func parse(c testCase) result {
	for _, name := range pgEnv {
		os.Unsetenv(name)
	}
	os.Setenv("PGHOST", "db")
	for k, v := range c.Env {
		os.Setenv(k, v)
	}
	defer func() {
		for k := range c.Env {
			os.Unsetenv(k)
		}
	}()
	config, err := pgconn.ParseConfig(c.Conn)
	if err != nil {
		msg := err.Error()
		switch {
		case strings.Contains(msg, "failed to parse as"):
			return result{Error: "parse"}
		case strings.Contains(msg, "sslmode is invalid"):
			return result{Error: "sslmode"}
		default:
			// Not quoted: the message may repeat the connection string.
			return result{Error: "other"}
		}
	}
	return result{
		Password: config.Password,
		TLS:      tlsMode(config),
		User:     config.User,
		Database: config.Database,
		Host:     config.Host,
		Port:     config.Port,
		Params:   config.RuntimeParams,
	}
}

func run() error {
	home, err := os.MkdirTemp("", "pgx-home")
	if err != nil {
		return err
	}
	defer os.RemoveAll(home)
	service := "[svc]\npassword=from-service\nsslmode=allow\n"
	if err := os.WriteFile(filepath.Join(home, ".pg_service.conf"), []byte(service), 0o600); err != nil {
		return err
	}
	os.Setenv("HOME", home)
	os.Setenv("USER", "nobody")
	var cases []testCase
	if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
		return fmt.Errorf("reading cases: %w", err)
	}
	results := make([]result, len(cases))
	for i, c := range cases {
		results[i] = parse(c)
	}
	return json.NewEncoder(os.Stdout).Encode(results)
}

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "pgx:", err)
		os.Exit(1)
	}
}
