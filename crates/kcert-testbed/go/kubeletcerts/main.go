// Command kubeletcerts drives the kubelet's own certificate managers
// (k8s.io/kubernetes/pkg/kubelet/certificate, the code a real kubelet runs) for kcert's tests:
//
//	kubeletcerts serving --kubeconfig K --node N --cert-dir D [--listen :PORT] [--timeout 60s]
//	    requests a kubernetes.io/kubelet-serving certificate for Node N's status.addresses, as a
//	    kubelet with serverTLSBootstrap does; with --listen it then serves TLS with it.
//	kubeletcerts renew-client --kubeconfig K --node N --cert-dir D [--timeout 60s]
//	    rotates the kubelet client certificate in D (kubelet-client-current.pem) now, as the
//	    kubelet's client rotation does at 70-90% of its lifetime.
//
// It prints one JSON line when the certificate is in hand ({"cert": path, "serial": hex,
// "csr": name}); errors go to stderr with exit status 1.
package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	v1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	clientset "k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/certificate"
	kubeletconfig "k8s.io/kubernetes/pkg/kubelet/apis/config"
	kubeletcert "k8s.io/kubernetes/pkg/kubelet/certificate"
)

func main() {
	if len(os.Args) < 2 {
		fail(fmt.Errorf("usage: kubeletcerts serving|renew-client --kubeconfig K --node N --cert-dir D"))
	}
	fs := flag.NewFlagSet(os.Args[1], flag.ExitOnError)
	kubeconfig := fs.String("kubeconfig", "", "the node's kubeconfig")
	node := fs.String("node", "", "the node's name")
	certDir := fs.String("cert-dir", "", "where the certificates live")
	listen := fs.String("listen", "", "serve TLS with the serving certificate on this address")
	timeout := fs.Duration("timeout", 60*time.Second, "how long to wait for the certificate")
	_ = fs.Parse(os.Args[2:])
	cfg, err := clientcmd.BuildConfigFromFlags("", *kubeconfig)
	if err != nil {
		fail(err)
	}
	client, err := clientset.NewForConfig(cfg)
	if err != nil {
		fail(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	defer cancel()
	var m certificate.Manager
	switch os.Args[1] {
	case "serving":
		addresses, err := nodeAddresses(ctx, client, *node)
		if err != nil {
			fail(err)
		}
		m, err = kubeletcert.NewKubeletServerCertificateManager(client, &kubeletconfig.KubeletConfiguration{}, types.NodeName(*node), func() []v1.NodeAddress { return addresses }, *certDir)
		if err != nil {
			fail(err)
		}
		m.Start()
		cert := waitFor(ctx, m)
		report(cert, filepath.Join(*certDir, "kubelet-server-current.pem"))
		if *listen != "" {
			srv := &http.Server{
				Addr: *listen,
				TLSConfig: &tls.Config{GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
					return m.Current(), nil
				}},
				Handler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = w.Write([]byte("ok " + *node)) }),
			}
			ln, err := net.Listen("tcp", *listen)
			if err != nil {
				fail(err)
			}
			fmt.Printf("{\"listening\":%q}\n", ln.Addr().String())
			fail(srv.ServeTLS(ln, "", ""))
		}
	case "renew-client":
		m, err = kubeletcert.NewKubeletClientCertificateManager(*certDir, types.NodeName(*node), nil, nil, "", "",
			func(*tls.Certificate) (clientset.Interface, error) { return client, nil })
		if err != nil {
			fail(err)
		}
		before := m.Current()
		if before == nil {
			fail(fmt.Errorf("no client certificate in %s to renew", *certDir))
		}
		rotator, ok := m.(interface{ RotateCerts() (bool, error) })
		if !ok {
			fail(fmt.Errorf("the certificate manager cannot rotate on demand"))
		}
		done := make(chan error, 1)
		go func() {
			ok, err := rotator.RotateCerts()
			if err == nil && !ok {
				err = fmt.Errorf("rotation did not complete")
			}
			done <- err
		}()
		select {
		case err := <-done:
			if err != nil {
				fail(err)
			}
		case <-ctx.Done():
			fail(fmt.Errorf("no renewed client certificate within %s", *timeout))
		}
		report(m.Current(), filepath.Join(*certDir, "kubelet-client-current.pem"))
	default:
		fail(fmt.Errorf("unknown mode %q", os.Args[1]))
	}
}

// nodeAddresses waits for Node name to report addresses, as the kubelet's own status loop
// would have before it asks for a serving certificate.
func nodeAddresses(ctx context.Context, client clientset.Interface, name string) ([]v1.NodeAddress, error) {
	for {
		n, err := client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
		if err == nil && len(n.Status.Addresses) > 0 {
			return n.Status.Addresses, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("node %s reported no addresses: %v", name, err)
		case <-time.After(200 * time.Millisecond):
		}
	}
}

func waitFor(ctx context.Context, m certificate.Manager) *tls.Certificate {
	for {
		if c := m.Current(); c != nil {
			return c
		}
		select {
		case <-ctx.Done():
			fail(fmt.Errorf("no certificate before the timeout"))
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func report(c *tls.Certificate, path string) {
	leaf := c.Leaf
	if leaf == nil {
		var err error
		if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
			fail(err)
		}
	}
	out, _ := json.Marshal(map[string]any{
		"cert":     path,
		"serial":   fmt.Sprintf("%x", leaf.SerialNumber),
		"subject":  leaf.Subject.String(),
		"dns":      leaf.DNSNames,
		"ips":      fmt.Sprint(leaf.IPAddresses),
		"notAfter": leaf.NotAfter.UTC().Format(time.RFC3339),
	})
	fmt.Println(string(out))
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "kubeletcerts:", err)
	os.Exit(1)
}
