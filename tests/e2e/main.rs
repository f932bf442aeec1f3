//! kcert's tests against a real kube-apiserver and etcd. One binary, one shared cluster
//! (`TestCluster::shared`); each test uses unique names and its own namespace.

mod admission_guard;
mod cel;
mod controller;
mod deploy;
mod differential;
mod faults;
mod ha;
mod helm;
mod hostile;
mod integrity;
mod ledger;
mod pki;
mod pod_security;
mod privilege;
mod renewal;
mod renewal_race;
mod revocation;
mod secrets;
mod testbed;
mod webhook_only;
