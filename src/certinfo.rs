//! The `certinfo` a stap client expects in a server's mDNS advertisement: the serial number of
//! the server's certificate (`stap.cert`, DER), read with a minimal DER walker.
//!
//! systemtap's `get_cert_serial_number` prints NSS's `cert->serialNumber`, which holds the
//! INTEGER's content bytes exactly as encoded, so a serial whose high bit is set keeps the
//! leading `00` that DER adds to keep it positive (`00:cc:1a:9b:4b`, where `openssl x509
//! -serial` shows `CC1A9B4B`). A client compares this text with the certificates it trusts,
//! so it has to match byte for byte.

use std::path::Path;

const TAG_INTEGER: u8 = 0x02;
const TAG_SEQUENCE: u8 = 0x30;
/// `[0] EXPLICIT`, constructed: the optional version field of a `TBSCertificate`.
const TAG_VERSION: u8 = 0xa0;

/// The serial number of the X.509 certificate in `der`, rendered as stap renders it: the
/// INTEGER's content bytes as lowercase hex pairs joined by `:`.
///
/// Only walks as far as the serial (`Certificate` → `tbsCertificate` → optional version →
/// `serialNumber`); it does not validate the rest of the certificate.
pub fn serial_from_der(der: &[u8]) -> Result<String, String> {
    if der.starts_with(b"-----BEGIN") {
        return Err("certificate is PEM, expected DER".to_string());
    }
    let (cert, _) = expect(der, TAG_SEQUENCE, "Certificate")?;
    let (tbs, _) = expect(cert, TAG_SEQUENCE, "tbsCertificate")?;
    let mut rest = tbs;
    // v1 certificates omit the version; stap.cert is v3, but accepting both costs nothing.
    if rest.first() == Some(&TAG_VERSION) {
        rest = element(rest, "version")?.2;
    }
    let (serial, _) = expect(rest, TAG_INTEGER, "serialNumber")?;
    if serial.is_empty() {
        return Err("serialNumber is empty".to_string());
    }
    let hex: Vec<String> = serial.iter().map(|b| format!("{b:02x}")).collect();
    Ok(hex.join(":"))
}

/// [`serial_from_der`] of the certificate file at `path`; errors name the path.
pub fn read_serial(path: &Path) -> Result<String, String> {
    let der = std::fs::read(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
    serial_from_der(&der).map_err(|e| format!("{}: {e}", path.display()))
}

/// The content of the element at the start of `input`, which must have tag `tag`, and the
/// bytes after it.
fn expect<'a>(input: &'a [u8], tag: u8, what: &str) -> Result<(&'a [u8], &'a [u8]), String> {
    let (found, content, rest) = element(input, what)?;
    if found != tag {
        return Err(format!(
            "{what}: expected tag 0x{tag:02x}, found 0x{found:02x}"
        ));
    }
    Ok((content, rest))
}

/// Splits the DER element at the start of `input` into its tag, its content and the bytes
/// after it.
fn element<'a>(input: &'a [u8], what: &str) -> Result<(u8, &'a [u8], &'a [u8]), String> {
    let truncated = || format!("{what}: truncated");
    let (&tag, after_tag) = input.split_first().ok_or_else(truncated)?;
    // Multi-byte tags never occur on the path to the serial.
    if tag & 0x1f == 0x1f {
        return Err(format!("{what}: unsupported multi-byte tag"));
    }
    let (&first, mut after_len) = after_tag.split_first().ok_or_else(truncated)?;
    let len = if first < 0x80 {
        usize::from(first)
    } else {
        let count = usize::from(first & 0x7f);
        // 0x80 is BER's indefinite length, which DER forbids; more than four length bytes
        // would mean a certificate of 4 GiB or more.
        if count == 0 || count > 4 {
            return Err(format!("{what}: invalid length encoding 0x{first:02x}"));
        }
        if after_len.len() < count {
            return Err(truncated());
        }
        let (bytes, rest) = after_len.split_at(count);
        after_len = rest;
        bytes
            .iter()
            .fold(0usize, |acc, &b| (acc << 8) | usize::from(b))
    };
    if after_len.len() < len {
        return Err(format!(
            "{what}: truncated ({len} bytes declared, {} present)",
            after_len.len()
        ));
    }
    let (content, rest) = after_len.split_at(len);
    Ok((tag, content, rest))
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use std::process::Command;

    /// A self-signed certificate with serial `serial` (as openssl's `-set_serial` takes it),
    /// in DER, made by openssl.
    pub(crate) fn openssl_cert(serial: &str) -> Vec<u8> {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("stap.cert");
        let status = Command::new("openssl")
            .args([
                "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=t",
            ])
            .args(["-days", "1", "-outform", "DER", "-set_serial", serial])
            .arg("-keyout")
            .arg(dir.path().join("stap.key"))
            .arg("-out")
            .arg(&cert)
            .output()
            .expect("run openssl");
        assert!(status.status.success(), "openssl failed: {status:?}");
        std::fs::read(&cert).expect("read certificate")
    }

    /// What `openssl x509 -serial` prints for `der`, e.g. `CC1A9B4B`.
    fn openssl_serial(der: &[u8]) -> String {
        let dir = tempfile::tempdir().expect("tempdir");
        let cert = dir.path().join("c.der");
        std::fs::write(&cert, der).expect("write certificate");
        let out = Command::new("openssl")
            .args(["x509", "-inform", "DER", "-noout", "-serial", "-in"])
            .arg(&cert)
            .output()
            .expect("run openssl");
        assert!(out.status.success());
        let text = String::from_utf8(out.stdout).expect("utf-8");
        text.trim().trim_start_matches("serial=").to_string()
    }

    #[test]
    fn high_bit_serial_keeps_leading_zero() {
        let der = openssl_cert("0xCC1A9B4B");
        assert_eq!(openssl_serial(&der), "CC1A9B4B");
        assert_eq!(serial_from_der(&der).unwrap(), "00:cc:1a:9b:4b");
    }

    #[test]
    fn low_bit_serial() {
        let der = openssl_cert("0x0102");
        assert_eq!(serial_from_der(&der).unwrap(), "01:02");
    }

    #[test]
    fn long_serial_matches_openssl() {
        let der = openssl_cert("0x7fedcba9876543210123456789abcdef01");
        let ours = serial_from_der(&der).unwrap();
        assert_eq!(ours, "7f:ed:cb:a9:87:65:43:21:01:23:45:67:89:ab:cd:ef:01");
        assert_eq!(ours.replace(':', "").to_uppercase(), openssl_serial(&der));
    }

    #[test]
    fn read_serial_from_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stap.cert");
        std::fs::write(&path, openssl_cert("0xCC1A9B4B")).unwrap();
        assert_eq!(read_serial(&path).unwrap(), "00:cc:1a:9b:4b");

        let missing = dir.path().join("missing.cert");
        let err = read_serial(&missing).unwrap_err();
        assert!(err.contains("missing.cert"), "{err}");

        std::fs::write(&path, b"\x30\x05\x30").unwrap();
        let err = read_serial(&path).unwrap_err();
        assert!(
            err.contains("stap.cert") && err.contains("truncated"),
            "{err}"
        );
    }

    #[test]
    fn hand_made_encodings() {
        // v1: no version field.
        assert_eq!(
            serial_from_der(b"\x30\x05\x30\x03\x02\x01\x05").unwrap(),
            "05"
        );
        // v3 version, then the serial.
        let v3 = b"\x30\x0a\x30\x08\xa0\x03\x02\x01\x02\x02\x01\x07";
        assert_eq!(serial_from_der(v3).unwrap(), "07");
        // Long-form lengths.
        let long = b"\x30\x81\x08\x30\x82\x00\x04\x02\x02\x00\x80";
        assert_eq!(serial_from_der(long).unwrap(), "00:80");
    }

    #[test]
    fn errors() {
        for (der, want) in [
            (&b""[..], "Certificate: truncated"),
            (b"\x30", "Certificate: truncated"),
            (b"\x30\x05\x30\x03\x02\x01", "truncated"),
            (b"\x30\x80\x00\x00", "invalid length"),
            (b"\x30\x85\x00\x00\x00\x00\x01", "invalid length"),
            (b"\x31\x00", "expected tag 0x30"),
            (b"\x30\x02\x30\x00", "serialNumber: truncated"),
            (b"\x30\x04\x30\x02\x02\x00", "serialNumber is empty"),
            (
                b"\x30\x05\x30\x03\x04\x01\x05",
                "serialNumber: expected tag 0x02",
            ),
            (b"\x30\x03\x1f\x01\x00", "multi-byte tag"),
            (b"-----BEGIN CERTIFICATE-----\n", "PEM"),
        ] {
            let err = serial_from_der(der).unwrap_err();
            assert!(err.contains(want), "{der:02x?}: {err}");
        }
    }

    #[test]
    fn every_truncation_of_a_real_certificate_fails() {
        let der = openssl_cert("0xCC1A9B4B");
        for n in 0..der.len() {
            assert!(serial_from_der(&der[..n]).is_err(), "prefix of {n} bytes");
        }
    }

    #[test]
    fn garbage_does_not_panic() {
        // xorshift: deterministic, no dependency.
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        for _ in 0..20_000 {
            let len = (next() % 64) as usize;
            let mut bytes: Vec<u8> = (0..len).map(|_| next() as u8).collect();
            // Steer some inputs past the first checks so the deeper paths get exercised.
            if let Some(b) = bytes.first_mut()
                && next() % 2 == 0
            {
                *b = TAG_SEQUENCE;
            }
            let _ = serial_from_der(&bytes);
        }
        let der = openssl_cert("0x0102");
        for i in 0..der.len().min(64) {
            for v in [0x00, 0x7f, 0x80, 0x81, 0x84, 0xff] {
                let mut bytes = der.clone();
                bytes[i] = v;
                let _ = serial_from_der(&bytes);
            }
        }
    }
}
