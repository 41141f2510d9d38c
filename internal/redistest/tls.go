package redistest

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

// TLSFiles are the PEM files of a test certificate authority, a server
// certificate it signed for 127.0.0.1 and localhost, and a client
// certificate it signed.
type TLSFiles struct {
	CA, ServerCert, ServerKey, ClientCert, ClientKey string
}

// GenerateTLSFiles writes a fresh CA, server and client certificate with
// their ECDSA P-256 keys into dir. They are valid for a day.
func GenerateTLSFiles(dir string) (TLSFiles, error) {
	f := TLSFiles{
		CA:         filepath.Join(dir, "ca.crt"),
		ServerCert: filepath.Join(dir, "server.crt"), ServerKey: filepath.Join(dir, "server.key"),
		ClientCert: filepath.Join(dir, "client.crt"), ClientKey: filepath.Join(dir, "client.key"),
	}
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return f, err
	}
	ca := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "baton test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, ca, ca, &caKey.PublicKey, caKey)
	if err != nil {
		return f, err
	}
	if err := writePEM(f.CA, "CERTIFICATE", caDER); err != nil {
		return f, err
	}
	leaf := func(serial int64, name string, usage x509.ExtKeyUsage, certFile, keyFile string) error {
		key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		if err != nil {
			return err
		}
		tmpl := &x509.Certificate{
			SerialNumber: big.NewInt(serial), Subject: pkix.Name{CommonName: name},
			NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
			KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{usage},
		}
		if usage == x509.ExtKeyUsageServerAuth {
			tmpl.DNSNames = []string{"localhost"}
			tmpl.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
		}
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			return err
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			return err
		}
		if err := writePEM(certFile, "CERTIFICATE", der); err != nil {
			return err
		}
		return writePEM(keyFile, "PRIVATE KEY", keyDER)
	}
	if err := leaf(2, "localhost", x509.ExtKeyUsageServerAuth, f.ServerCert, f.ServerKey); err != nil {
		return f, err
	}
	return f, leaf(3, "baton", x509.ExtKeyUsageClientAuth, f.ClientCert, f.ClientKey)
}

func writePEM(path, kind string, der []byte) error {
	return os.WriteFile(path, pem.EncodeToMemory(&pem.Block{Type: kind, Bytes: der}), 0o600)
}

// ClientTLSConfig trusts the files' CA and presents their client
// certificate.
func (f TLSFiles) ClientTLSConfig() (*tls.Config, error) {
	pemCA, err := os.ReadFile(f.CA)
	if err != nil {
		return nil, err
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemCA) {
		return nil, fmt.Errorf("redistest: no certificate in %s", f.CA)
	}
	cert, err := tls.LoadX509KeyPair(f.ClientCert, f.ClientKey)
	if err != nil {
		return nil, err
	}
	return &tls.Config{MinVersion: tls.VersionTLS12, RootCAs: pool, Certificates: []tls.Certificate{cert}}, nil
}

// TLSServer is a redis-server that accepts only TLS connections from
// clients with a certificate signed by Files.CA (tls-auth-clients yes).
type TLSServer struct {
	// Addr is host:port of the TLS port.
	Addr string
	// Files are the certificates and keys, for clients and config files.
	Files TLSFiles
	proc  *process
}

// StartTLS starts a TLSServer for the test, with certificates generated in
// its temporary directory, and stops it when the test ends. It skips the
// test when redis-server is missing, or fails it when Required.
func StartTLS(tb testing.TB) *TLSServer {
	tb.Helper()
	need(tb)
	s, err := StartTLSServer(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(s.Stop)
	return s
}

// StartTLSServer generates certificates in dir and starts a TLSServer
// there, listening on no plain port. The caller must Stop it.
func StartTLSServer(dir string) (*TLSServer, error) {
	files, err := GenerateTLSFiles(dir)
	if err != nil {
		return nil, fmt.Errorf("redistest: generating certificates: %w", err)
	}
	conf, err := files.ClientTLSConfig()
	if err != nil {
		return nil, err
	}
	return withFreePorts(1, func(ports []int) (*TLSServer, error) {
		port := strconv.Itoa(ports[0])
		p, err := spawn(dir, "redis", ports[0], conf, append([]string{"--port", "0", "--tls-port", port,
			"--tls-cert-file", files.ServerCert, "--tls-key-file", files.ServerKey,
			"--tls-ca-cert-file", files.CA, "--tls-auth-clients", "yes"}, baseArgs(dir, "redis")...)...)
		if err != nil {
			return nil, err
		}
		return &TLSServer{Addr: p.addr, Files: files, proc: p}, nil
	})
}

// Client returns a client that trusts the CA and presents the client
// certificate. The caller closes it.
func (s *TLSServer) Client() (*redis.Client, error) {
	conf, err := s.Files.ClientTLSConfig()
	if err != nil {
		return nil, err
	}
	return redis.NewClient(&redis.Options{Addr: s.Addr, TLSConfig: conf}), nil
}

// Stop kills the server.
func (s *TLSServer) Stop() { s.proc.kill() }
