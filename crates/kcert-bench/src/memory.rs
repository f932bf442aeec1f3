//! Controller memory with many CSRs cached: RSS sampled over time for kcert-controller's
//! signer and for kube-controller-manager running only csrsigning, over the same objects.

use crate::engines;
use crate::process::{Running, rss_kib};
use crate::stats::Spread;
use anyhow::Result;
use kcert_testbed::TestCluster;
use std::time::Duration;

/// RSS samples of one process, in MiB.
#[derive(Debug, Default, Clone)]
pub struct Rss {
    pub samples: Vec<f64>,
}

impl Rss {
    pub fn peak(&self) -> f64 {
        self.samples.iter().copied().fold(0.0, f64::max)
    }

    /// Median of the last third: the process after its initial list, at rest.
    pub fn settled(&self) -> f64 {
        let tail = &self.samples[self.samples.len() * 2 / 3..];
        Spread::of(tail).median
    }
}

async fn sample(child: &Running, seconds: u32) -> Rss {
    let mut rss = Rss::default();
    for _ in 0..seconds * 2 {
        tokio::time::sleep(Duration::from_millis(500)).await;
        if let Some(k) = rss_kib(child.pid()) {
            rss.samples.push(k as f64 / 1024.0);
        }
    }
    rss
}

/// kcert-controller's signer over the CSRs of `signer` already in the cluster.
pub async fn kcert(cluster: &TestCluster, signer: &str, seconds: u32) -> Result<Rss> {
    let child = engines::kcert(
        cluster,
        &[
            "--controllers=signer",
            "--signer-name",
            signer,
            "--ledger=false",
        ],
    )?;
    Ok(sample(&child, seconds).await)
}

/// kube-controller-manager running only csrsigning (limits lifted, as in the throughput runs).
pub async fn kcm(cluster: &TestCluster, seconds: u32) -> Result<Rss> {
    let child = engines::kcm(cluster, Some((1000, 2000)))?;
    Ok(sample(&child, seconds).await)
}
