//! Everything kcert reads from untrusted bytes: PEM armour, CSRs (DER and PEM), certificates,
//! keys. None may panic; a CSR that parses must have a verified signature and a readable subject.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    kcert_pki::fuzz_untrusted_bytes(data);
});
