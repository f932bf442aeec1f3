// Command x509read reads CSRs and certificates exactly as kube-apiserver v1.36 does, for kcert's
// differential tests: Go's crypto/x509 parses them, and the API server's own x509 authenticator
// (k8s.io/apiserver/pkg/authentication/request/x509.CommonNameUserConversion) turns the subject
// into a user. One request per input line, "csr BASE64DER" or "cert BASE64DER"; one JSON answer
// per output line, in order.
package main

import (
	"bufio"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"

	authnx509 "k8s.io/apiserver/pkg/authentication/request/x509"
)

type answer struct {
	// Parsed: Go's parser accepted the DER (and, for a CSR, its signature).
	Parsed bool   `json:"parsed"`
	Error  string `json:"error,omitempty"`
	// Authenticated: the x509 authenticator produced a user (false for an empty CN, or when it
	// returned an error, which is then in Error).
	Authenticated bool                `json:"authenticated"`
	User          string              `json:"user"`
	UID           string              `json:"uid"`
	Groups        []string            `json:"groups"`
	Extra         map[string][]string `json:"extra,omitempty"`
	// The subject alternative names as Go parsed them (what kube-controller-manager's signer
	// copies into a kubelet serving certificate).
	DNS    []string `json:"dns"`
	IPs    []string `json:"ips"`
	Emails []string `json:"emails"`
	URIs   []string `json:"uris"`
}

func read(kind string, der []byte) answer {
	var cert *x509.Certificate
	switch kind {
	case "csr":
		csr, err := x509.ParseCertificateRequest(der)
		if err != nil {
			return answer{Error: err.Error()}
		}
		if err := csr.CheckSignature(); err != nil {
			return answer{Error: "signature: " + err.Error()}
		}
		// The authenticator reads only the subject (and the raw bytes for credential-id).
		cert = &x509.Certificate{Subject: csr.Subject, Raw: csr.Raw, DNSNames: csr.DNSNames,
			IPAddresses: csr.IPAddresses, EmailAddresses: csr.EmailAddresses, URIs: csr.URIs}
	case "cert":
		c, err := x509.ParseCertificate(der)
		if err != nil {
			return answer{Error: err.Error()}
		}
		cert = c
	default:
		return answer{Error: "unknown kind " + kind}
	}
	resp, ok, err := authnx509.CommonNameUserConversion.User([]*x509.Certificate{cert})
	a := answer{Parsed: true, Groups: []string{}, DNS: cert.DNSNames, Emails: cert.EmailAddresses,
		IPs: []string{}, URIs: []string{}}
	for _, ip := range cert.IPAddresses {
		a.IPs = append(a.IPs, ip.String())
	}
	for _, u := range cert.URIs {
		a.URIs = append(a.URIs, u.String())
	}
	if err != nil {
		a.Error = err.Error()
		return a
	}
	if !ok {
		return a
	}
	u := resp.User
	a.Authenticated = true
	a.User = u.GetName()
	a.UID = u.GetUID()
	if g := u.GetGroups(); g != nil {
		a.Groups = g
	}
	a.Extra = u.GetExtra()
	return a
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 64<<20)
	out := bufio.NewWriter(os.Stdout)
	defer out.Flush()
	enc := json.NewEncoder(out)
	for in.Scan() {
		kind, b64, found := strings.Cut(in.Text(), " ")
		var a answer
		if der, err := base64.StdEncoding.DecodeString(b64); !found || err != nil {
			a = answer{Error: fmt.Sprintf("bad input line: %v", err)}
		} else {
			a = read(kind, der)
		}
		if err := enc.Encode(a); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		if kind == "flush" {
			out.Flush()
		}
	}
	if err := in.Err(); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}
