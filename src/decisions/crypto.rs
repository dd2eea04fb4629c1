//! Sealing a decision's inputs at rest: AES-256-GCM with a random nonce per
//! record and the decision id as associated data, so a sealed row cannot be
//! moved to another decision.

use aes_gcm::{
    Aes256Gcm, KeyInit, Nonce,
    aead::{Aead, AeadInPlace, Payload},
};

const NONCE: usize = 12;
const TAG: usize = 16;

pub struct InputCipher {
    cipher: Aes256Gcm,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("sealed inputs of decision {0} do not open: wrong key or altered data")]
pub struct OpenError(pub String);

impl InputCipher {
    /// Uses the first 32 bytes of `key`.
    pub fn new(key: &[u8]) -> Self {
        Self {
            cipher: Aes256Gcm::new_from_slice(&key[..32]).expect("a 32-byte key"),
        }
    }

    /// nonce ‖ ciphertext of the row's little-endian f32 values ‖ tag, in
    /// one allocation: sealing runs on the request path of every recorded
    /// decision.
    pub fn seal(&self, decision_id: &str, row: &[f32]) -> Vec<u8> {
        self.seal_with(decision_id, row.len() * 4, |sealed| {
            sealed.extend(row.iter().flat_map(|v| v.to_le_bytes()));
        })
    }

    /// [`InputCipher::seal`] for any bytes about the decision (its stored
    /// explanation holds the values the model saw).
    pub fn seal_bytes(&self, decision_id: &str, plain: &[u8]) -> Vec<u8> {
        self.seal_with(decision_id, plain.len(), |sealed| {
            sealed.extend_from_slice(plain);
        })
    }

    fn seal_with(&self, decision_id: &str, len: usize, fill: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
        let nonce: [u8; NONCE] = rand::random();
        let mut sealed = Vec::with_capacity(NONCE + len + TAG);
        sealed.extend_from_slice(&nonce);
        fill(&mut sealed);
        let tag = self
            .cipher
            .encrypt_in_place_detached(
                Nonce::from_slice(&nonce),
                decision_id.as_bytes(),
                &mut sealed[NONCE..],
            )
            .expect("AES-GCM encrypts any length we store");
        sealed.extend_from_slice(&tag);
        sealed
    }

    pub fn open(&self, decision_id: &str, sealed: &[u8]) -> Result<Vec<f32>, OpenError> {
        let plain = self.open_bytes(decision_id, sealed)?;
        if plain.len() % 4 != 0 {
            return Err(OpenError(decision_id.to_owned()));
        }
        Ok(plain
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }

    pub fn open_bytes(&self, decision_id: &str, sealed: &[u8]) -> Result<Vec<u8>, OpenError> {
        let fail = || OpenError(decision_id.to_owned());
        if sealed.len() < NONCE {
            return Err(fail());
        }
        let (nonce, body) = sealed.split_at(NONCE);
        self.cipher
            .decrypt(
                Nonce::from_slice(nonce),
                Payload {
                    msg: body,
                    aad: decision_id.as_bytes(),
                },
            )
            .map_err(|_| fail())
    }
}

/// A cipher under a fixed key, for tests that read and write the record.
#[cfg(test)]
pub(crate) fn test_cipher() -> InputCipher {
    InputCipher::new(&[7; 32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seals_and_opens_only_for_its_decision() {
        let c = InputCipher::new(&[9; 32]);
        let row = [1.5f32, f32::NAN, -3.0];
        let sealed = c.seal("d1", &row);
        let back = c.open("d1", &sealed).unwrap();
        assert_eq!(back[0], 1.5);
        assert!(back[1].is_nan());
        assert!(c.open("d2", &sealed).is_err(), "bound to its decision id");
        assert!(InputCipher::new(&[8; 32]).open("d1", &sealed).is_err());
        let mut tampered = sealed.clone();
        *tampered.last_mut().unwrap() ^= 1;
        assert!(c.open("d1", &tampered).is_err());
    }
}
