//! The cryptography of every peer connection: `rtc`'s default provider (ring), and one
//! thing ring lacks, ECDSA signatures over P-224, which DTLS peers must be able to verify.
//!
//! FFmpeg 8's WHIP muxer built with GnuTLS (the FFmpeg inside PyAV's wheels, for one)
//! makes its DTLS certificate on a P-224 key and signs its `ServerKeyExchange` or
//! `CertificateVerify` with it (ECDSA with SHA-256). `rtc` asks its provider to verify such
//! a signature as ECDSA P-256 (it picks the curve from the hash), which fails ("expected
//! and actual key signature do not match") and ends the session. A P-224 key is told by
//! its encoded size (57 bytes uncompressed); its signatures are verified here with
//! RustCrypto's `p224` (SHA-256 prehash, truncated to the curve's size as ECDSA does).
//! Everything else goes to the default provider unchanged.

use std::sync::{Arc, LazyLock};

use rtc::crypto::{
    ActiveKeyExchange, AeadAlgorithm, AeadCipher, BlockCipherAlgorithm, CbcAlgorithm, CbcCipher,
    CryptoAlgorithm, CryptoError, HashAlgorithm, HmacAlgorithm, KeyExchangeAlgorithm, Mac,
    PublicKey, PublicKeyEncoding, RTCCrypto, RTCCryptoProvider, RTCRandom, SignatureScheme,
    SigningKey, StreamCipher, StreamCipherAlgorithm,
};

/// Bytes of an uncompressed P-224 point (`04 || x || y`).
const P224_POINT: usize = 1 + 28 + 28;

/// The provider: the default one, with P-224 verification.
pub struct Provider {
    crypto: Verifying,
}

/// The one provider of the node's peer connections.
static SHARED: LazyLock<Option<Arc<dyn RTCCryptoProvider>>> = LazyLock::new(|| {
    let inner = rtc::crypto::default_provider().ok()?;
    Some(Arc::new(Provider { crypto: Verifying { inner } }) as Arc<dyn RTCCryptoProvider>)
});

impl Provider {
    /// The default provider with P-224 verification, shared by every peer connection;
    /// `None` if `rtc` has no default (then `rtc` falls back to its own, and fails alike).
    pub fn shared() -> Option<Arc<dyn RTCCryptoProvider>> {
        SHARED.clone()
    }
}

impl RTCCryptoProvider for Provider {
    fn name(&self) -> &'static str {
        "ring+p224"
    }

    fn crypto(&self) -> &dyn RTCCrypto {
        &self.crypto
    }

    fn random(&self) -> &dyn RTCRandom {
        self.crypto.inner.random()
    }
}

/// The default provider's operations, and P-224 signature verification.
struct Verifying {
    inner: Arc<dyn RTCCryptoProvider>,
}

impl Verifying {
    fn base(&self) -> &dyn RTCCrypto {
        self.inner.crypto()
    }
}

/// Verifies an ECDSA P-224 signature (ASN.1 DER) of `message` hashed with SHA-256.
fn verify_p224(point: &[u8], message: &[u8], signature: &[u8]) -> Result<(), CryptoError> {
    use p224::ecdsa::signature::hazmat::PrehashVerifier;
    use p224::ecdsa::{Signature, VerifyingKey};
    use sha2::Digest;
    let key = VerifyingKey::from_sec1_bytes(point).map_err(|_| CryptoError::InvalidSignature)?;
    let signature = Signature::from_der(signature).map_err(|_| CryptoError::InvalidSignature)?;
    let digest = sha2::Sha256::digest(message);
    key.verify_prehash(&digest, &signature).map_err(|_| CryptoError::InvalidSignature)
}

impl RTCCrypto for Verifying {
    fn supports(&self, algorithm: CryptoAlgorithm) -> bool {
        self.base().supports(algorithm)
    }

    fn hash(&self, algorithm: HashAlgorithm, data: &[u8]) -> Result<Vec<u8>, CryptoError> {
        self.base().hash(algorithm, data)
    }

    fn block_encrypt(
        &self,
        algorithm: BlockCipherAlgorithm,
        key: &[u8],
        block: &mut [u8],
    ) -> Result<(), CryptoError> {
        self.base().block_encrypt(algorithm, key, block)
    }

    fn new_hmac(&self, algorithm: HmacAlgorithm, key: &[u8]) -> Result<Box<dyn Mac>, CryptoError> {
        self.base().new_hmac(algorithm, key)
    }

    fn new_stream_cipher(
        &self,
        algorithm: StreamCipherAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn StreamCipher>, CryptoError> {
        self.base().new_stream_cipher(algorithm, key)
    }

    fn new_aead(
        &self,
        algorithm: AeadAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn AeadCipher>, CryptoError> {
        self.base().new_aead(algorithm, key)
    }

    fn new_cbc(
        &self,
        algorithm: CbcAlgorithm,
        key: &[u8],
    ) -> Result<Box<dyn CbcCipher>, CryptoError> {
        self.base().new_cbc(algorithm, key)
    }

    fn start_key_exchange(
        &self,
        algorithm: KeyExchangeAlgorithm,
    ) -> Result<Box<dyn ActiveKeyExchange>, CryptoError> {
        self.base().start_key_exchange(algorithm)
    }

    fn generate_signing_key(
        &self,
        scheme: SignatureScheme,
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.base().generate_signing_key(scheme)
    }

    fn import_signing_key(
        &self,
        scheme: SignatureScheme,
        pkcs8_der: &[u8],
    ) -> Result<Arc<dyn SigningKey>, CryptoError> {
        self.base().import_signing_key(scheme, pkcs8_der)
    }

    fn verify_signature(
        &self,
        scheme: SignatureScheme,
        public_key: PublicKey<'_>,
        message: &[u8],
        signature: &[u8],
    ) -> Result<(), CryptoError> {
        let p224 = scheme == SignatureScheme::EcdsaP256Sha256
            && public_key.encoding == PublicKeyEncoding::EcUncompressedPoint
            && public_key.bytes.len() == P224_POINT;
        if p224 {
            return verify_p224(public_key.bytes, message, signature);
        }
        self.base().verify_signature(scheme, public_key, message, signature)
    }
}

#[cfg(test)]
mod tests {
    use p224::ecdsa::signature::hazmat::PrehashSigner;
    use p224::ecdsa::{Signature, SigningKey as P224Key};
    use sha2::Digest;

    use super::*;

    #[test]
    fn p224_signatures_verify_and_others_go_to_the_default_provider() {
        let provider = Provider::shared().expect("ring");
        let key = P224Key::from_slice(&[7u8; 28]).expect("a P-224 key");
        let point = key.verifying_key().to_encoded_point(false);
        let message = b"client random, server random, params";
        let digest = sha2::Sha256::digest(message);
        let signature: Signature = key.sign_prehash(&digest).expect("sign");
        let der = signature.to_der();
        let public =
            PublicKey { encoding: PublicKeyEncoding::EcUncompressedPoint, bytes: point.as_bytes() };
        let crypto = provider.crypto();
        assert_eq!(point.as_bytes().len(), P224_POINT);
        crypto
            .verify_signature(SignatureScheme::EcdsaP256Sha256, public, message, der.as_bytes())
            .expect("a good P-224 signature verifies");
        let wrong = crypto.verify_signature(
            SignatureScheme::EcdsaP256Sha256,
            public,
            b"another message",
            der.as_bytes(),
        );
        assert!(wrong.is_err(), "a signature of another message does not");
        let garbage =
            crypto.verify_signature(SignatureScheme::EcdsaP256Sha256, public, message, &[0x30, 1]);
        assert!(garbage.is_err());
        // A P-256 point is the default provider's to judge (here: a bad signature).
        let p256 = [4u8; 65];
        let other = PublicKey { encoding: PublicKeyEncoding::EcUncompressedPoint, bytes: &p256 };
        assert!(crypto
            .verify_signature(SignatureScheme::EcdsaP256Sha256, other, message, &[])
            .is_err());
        assert!(crypto.hash(HashAlgorithm::Sha256, b"x").is_ok_and(|h| h.len() == 32));
    }
}
