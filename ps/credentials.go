package ps

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"strings"
)

// EnvToken is the environment variable a bearer token is read from when
// Credentials name none (gotflow's processes set it for their children).
const EnvToken = "GOTFLOW_PS_TOKEN"

// Credentials secure the connections between workers and shards: a bearer
// token and TLS, with client certificates (mTLS) when a CA is given to a
// server. The same value configures both sides — a server built from
// ServerOptions requires what a client built from ClientOptions sends — so
// one set of files (a certificate valid for server and client use, signed
// by CAFile) secures a whole job. It is the one place gotflow loads them:
// `gotflow ps`, `gotflow worker`, `gotflow train` and TFEstimator all go
// through it.
type Credentials struct {
	// Token is the bearer token itself; TokenFile a file holding it. With
	// neither, the token is taken from EnvToken (empty: no token).
	Token     string `json:"-"`
	TokenFile string `json:"token_file,omitempty"`
	// CertFile and KeyFile are this side's PEM certificate and key: the
	// server's certificate on a shard, the client certificate on a worker.
	CertFile string `json:"cert_file,omitempty"`
	KeyFile  string `json:"key_file,omitempty"`
	// CAFile is a PEM CA bundle. A server with one requires client
	// certificates signed by it; a client verifies the server with it
	// (without one, a TLS client trusts the system's roots).
	CAFile string `json:"ca_file,omitempty"`
	// ServerName is the name a client checks in the server's certificate
	// (default: the host of the address it dials).
	ServerName string `json:"server_name,omitempty"`
}

// TLS reports whether the credentials ask for TLS.
func (c Credentials) TLS() bool { return c.CertFile != "" || c.KeyFile != "" || c.CAFile != "" }

// LoadToken returns the bearer token: Token, else TokenFile's content, else
// EnvToken.
func (c Credentials) LoadToken() (string, error) {
	switch {
	case c.Token != "":
		return c.Token, nil
	case c.TokenFile != "":
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return "", fmt.Errorf("ps: token file: %w", err)
		}
		tok := strings.TrimSpace(string(b))
		if tok == "" {
			return "", fmt.Errorf("ps: token file %s is empty", c.TokenFile)
		}
		return tok, nil
	}
	return os.Getenv(EnvToken), nil
}

func (c Credentials) certPool() (*x509.CertPool, error) {
	pem, err := os.ReadFile(c.CAFile)
	if err != nil {
		return nil, fmt.Errorf("ps: CA file: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("ps: CA file %s holds no PEM certificate", c.CAFile)
	}
	return pool, nil
}

// ServerTLS returns the server side's TLS configuration (nil without TLS):
// CertFile and KeyFile are required, and CAFile makes client certificates
// mandatory.
func (c Credentials) ServerTLS() (*tls.Config, error) {
	if !c.TLS() {
		return nil, nil
	}
	if c.CertFile == "" || c.KeyFile == "" {
		return nil, fmt.Errorf("ps: a TLS server needs a certificate and its key (have cert %q, key %q)", c.CertFile, c.KeyFile)
	}
	cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
	if err != nil {
		return nil, fmt.Errorf("ps: certificate %s / key %s: %w", c.CertFile, c.KeyFile, err)
	}
	tc := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if c.CAFile != "" {
		if tc.ClientCAs, err = c.certPool(); err != nil {
			return nil, err
		}
		tc.ClientAuth = tls.RequireAndVerifyClientCert
	}
	return tc, nil
}

// ClientTLS returns the client side's TLS configuration (nil without TLS):
// CAFile verifies the server, CertFile and KeyFile (both or neither) are
// the client certificate.
func (c Credentials) ClientTLS() (*tls.Config, error) {
	if !c.TLS() {
		return nil, nil
	}
	if (c.CertFile == "") != (c.KeyFile == "") {
		return nil, fmt.Errorf("ps: a client certificate needs both files (have cert %q, key %q)", c.CertFile, c.KeyFile)
	}
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: c.ServerName}
	if c.CertFile != "" {
		cert, err := tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("ps: certificate %s / key %s: %w", c.CertFile, c.KeyFile, err)
		}
		tc.Certificates = []tls.Certificate{cert}
	}
	if c.CAFile != "" {
		var err error
		if tc.RootCAs, err = c.certPool(); err != nil {
			return nil, err
		}
	}
	return tc, nil
}

// ServerOptions returns the options that make a server require these
// credentials.
func (c Credentials) ServerOptions() ([]ServerOption, error) {
	var opts []ServerOption
	tok, err := c.LoadToken()
	if err != nil {
		return nil, err
	}
	if tok != "" {
		opts = append(opts, WithToken(tok))
	}
	tc, err := c.ServerTLS()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, WithTLS(tc))
	}
	return opts, nil
}

// ClientOptions returns the options that make a client present these
// credentials.
func (c Credentials) ClientOptions() ([]ClientOption, error) {
	var opts []ClientOption
	tok, err := c.LoadToken()
	if err != nil {
		return nil, err
	}
	if tok != "" {
		opts = append(opts, WithToken(tok))
	}
	tc, err := c.ClientTLS()
	if err != nil {
		return nil, err
	}
	if tc != nil {
		opts = append(opts, WithTLS(tc))
	}
	return opts, nil
}
