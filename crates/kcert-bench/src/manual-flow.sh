#!/usr/bin/env bash
# The seeds' manual onboarding flow, as an admin would script it (kcert-bench's onboarding
# baseline). Usage: manual-flow.sh USER DIR SIGNER, with KUBECTL, KUBECONFIG, SERVER and CA set.
set -euo pipefail
user=$1 dir=$2 signer=$3
cd "$dir"
openssl genrsa -out "$user.key" 2048 2>/dev/null
openssl req -new -key "$user.key" -subj "/CN=$user/O=dev" -out "$user.csr"
cat > "$user-csr.yaml" <<MANIFEST
apiVersion: certificates.k8s.io/v1
kind: CertificateSigningRequest
metadata:
  name: $user
spec:
  request: $(base64 -w0 < "$user.csr")
  signerName: $signer
  usages: [digital signature, key encipherment, client auth]
MANIFEST
"$KUBECTL" apply -f "$user-csr.yaml" >/dev/null
"$KUBECTL" certificate approve "$user" >/dev/null
# Poll every 0.1 s: generous to the script (a person re-running kubectl get waits far longer).
until cert=$("$KUBECTL" get csr "$user" -o jsonpath='{.status.certificate}') && [ -n "$cert" ]; do
  sleep 0.1
done
echo "$cert" | base64 -d > "$user.crt"
kc="$user.kubeconfig"
"$KUBECTL" config set-cluster bench --server="$SERVER" --certificate-authority="$CA" --embed-certs --kubeconfig="$kc" >/dev/null
"$KUBECTL" config set-credentials "$user" --client-key="$user.key" --client-certificate="$user.crt" --embed-certs --kubeconfig="$kc" >/dev/null
"$KUBECTL" config set-context "$user" --cluster=bench --user="$user" --kubeconfig="$kc" >/dev/null
"$KUBECTL" config use-context "$user" --kubeconfig="$kc" >/dev/null
