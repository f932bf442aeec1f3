//! Randomness is passed in, so tests can pin serial numbers.

use crate::{PkiError, Result};

/// A source of random bytes for serial numbers.
pub trait RandomSource {
    /// Fill `dest` with random bytes.
    fn fill(&self, dest: &mut [u8]) -> Result<()>;
}

/// The operating system's CSPRNG (through aws-lc).
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRandom;

impl RandomSource for SystemRandom {
    fn fill(&self, dest: &mut [u8]) -> Result<()> {
        aws_lc_rs::rand::fill(dest).map_err(|_| PkiError::Crypto("reading random bytes"))
    }
}

/// A positive serial number below 2^127, as kube-controller-manager's (random < 2^128).
pub(crate) fn serial_number(rng: &dyn RandomSource) -> Result<[u8; 16]> {
    loop {
        let mut bytes = [0u8; 16];
        rng.fill(&mut bytes)?;
        bytes[0] &= 0x7f;
        if bytes.iter().any(|b| *b != 0) {
            return Ok(bytes);
        }
    }
}
