//! Reads the IAB consent strings' bit streams.
//!
//! TCF and GPP strings are not base64 of bytes: each character of the
//! URL-safe alphabet carries six bits, and GPP pads only to a multiple of six,
//! so a valid segment may be one character longer than any byte string
//! encodes. Byte-oriented base64 decoders therefore reject valid strings; this
//! reader decodes per character and never reads past the end.

use std::{borrow::Cow, fmt::Display};

use super::SignalError;

/// A segment's bits, six per character, read left to right.
#[derive(Debug)]
pub struct BitReader {
    sextets: Vec<u8>,
    pos: usize,
    /// Names the segment in errors, e.g. "core segment" or "segment 2".
    what: Cow<'static, str>,
}

fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// Whether `c` is a character of the URL-safe base64 alphabet.
pub fn is_url_safe_base64(c: u8) -> bool {
    sextet(c).is_some()
}

impl BitReader {
    /// Decodes one segment, naming the first character outside the URL-safe
    /// base64 alphabet.
    pub fn new(segment: &str, what: impl Into<Cow<'static, str>>) -> Result<Self, SignalError> {
        let what = what.into();
        // Counted in characters, and the character shown whole: a
        // non-ASCII one is not split into the bytes of its encoding.
        let sextets = segment
            .chars()
            .enumerate()
            .map(|(i, c)| {
                u8::try_from(c).ok().and_then(sextet).ok_or_else(|| {
                    SignalError::new(format!(
                        "{what}: character {} ({c:?}) is not URL-safe base64",
                        i + 1
                    ))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        if sextets.is_empty() {
            return Err(SignalError::new(format!("{what}: is empty")));
        }
        Ok(Self {
            sextets,
            pos: 0,
            what,
        })
    }

    fn bit_len(&self) -> usize {
        self.sextets.len() * 6
    }

    pub fn remaining(&self) -> usize {
        self.bit_len() - self.pos
    }

    pub fn bit(&mut self) -> Result<bool, SignalError> {
        Ok(self.read(1, "bit")? == 1)
    }

    /// Reads a big-endian unsigned field of `width` ≤ 64 bits, naming `field`
    /// when the string ends first. `field` is formatted only then, so
    /// `format_args!` names cost nothing on a valid string.
    pub fn read(&mut self, width: usize, field: impl Display) -> Result<u64, SignalError> {
        debug_assert!(width <= 64);
        if self.remaining() < width {
            return Err(SignalError::new(format!(
                "{}: ends at bit {} while reading {field} ({width} bits); the string is truncated",
                self.what,
                self.bit_len()
            )));
        }
        // Take as many bits as the current character still holds at once.
        let (mut value, mut need) = (0u64, width);
        while need > 0 {
            let offset = self.pos % 6;
            let take = (6 - offset).min(need);
            let bits = (self.sextets[self.pos / 6] >> (6 - offset - take)) & ((1 << take) - 1);
            value = (value << take) | u64::from(bits);
            self.pos += take;
            need -= take;
        }
        Ok(value)
    }

    /// A fixed-width bitfield of ids, encoded id 1 first, as a mask holding
    /// id i at bit i-1.
    pub fn mask(&mut self, width: usize, field: impl Display) -> Result<u64, SignalError> {
        let value = self.read(width, field)?;
        Ok(if width == 0 {
            0
        } else {
            value.reverse_bits() >> (64 - width)
        })
    }

    pub fn u8(&mut self, width: usize, field: impl Display) -> Result<u8, SignalError> {
        debug_assert!(width <= 8);
        Ok(self.read(width, field)? as u8)
    }

    pub fn u16(&mut self, width: usize, field: impl Display) -> Result<u16, SignalError> {
        debug_assert!(width <= 16);
        Ok(self.read(width, field)? as u16)
    }

    /// Two letters of six bits each, 0 = 'A'.
    pub fn letters(&mut self, field: &str) -> Result<String, SignalError> {
        let mut s = String::with_capacity(2);
        for _ in 0..2 {
            let n = self.u8(6, field)?;
            if n > 25 {
                return Err(SignalError::new(format!(
                    "{}: {field} holds {n}, which is not a letter A-Z",
                    self.what
                )));
            }
            s.push(char::from(b'A' + n));
        }
        Ok(s)
    }

    /// A Fibonacci-coded positive integer (GPP): Zeckendorf bits, lowest
    /// Fibonacci number first, ended by two consecutive ones.
    pub fn fibonacci(&mut self, field: &str) -> Result<u64, SignalError> {
        let (mut a, mut b) = (1u64, 2u64);
        let mut total = 0u64;
        let mut last = false;
        loop {
            let bit = self.bit().map_err(|_| {
                SignalError::new(format!(
                    "{}: {field} is a Fibonacci code with no terminating '11'",
                    self.what
                ))
            })?;
            if bit && last {
                return Ok(total);
            }
            if bit {
                total = total
                    .checked_add(a)
                    .filter(|t| *t <= u64::from(u32::MAX))
                    .ok_or_else(|| {
                        SignalError::new(format!("{}: {field} is too large", self.what))
                    })?;
            }
            last = bit;
            (a, b) = (b, a.saturating_add(b));
        }
    }

    /// Checks that only padding follows the last field: encoders pad with
    /// zero bits (to a character, a byte, or IAB's TCF encoder to 24
    /// bits). A set bit there is content the layout has no field for, e.g.
    /// a body written for another version than the one it is labelled
    /// with: read by the label, its last fields (a known child's signal)
    /// would be lost without a word.
    pub fn finish(mut self) -> Result<(), SignalError> {
        let end = self.pos;
        while self.remaining() > 0 {
            let width = self.remaining().min(64);
            let at = self.pos;
            let bits = self.read(width, "padding")?;
            if bits != 0 {
                let set = at + bits.leading_zeros() as usize - (64 - width);
                return Err(self.error(format!(
                    "bit {} is set after the last field, which ends at bit {end}; padding is zero bits, so the string carries content its layout does not define (is its version right?)",
                    set + 1
                )));
            }
        }
        Ok(())
    }

    /// The error type's constructor with this segment's name in front.
    pub fn error(&self, message: impl std::fmt::Display) -> SignalError {
        SignalError::new(format!("{}: {message}", self.what))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_zero_bits_may_follow_the_last_field() {
        // 000011 000001 | 000000 000001: Type and Version, then a set bit 24.
        let mut r = BitReader::new("DBAB", "header").unwrap();
        r.read(12, "Type and Version").unwrap();
        let e = r.finish().unwrap_err().to_string();
        assert!(
            e.starts_with("header: bit 24 is set after the last field, which ends at bit 12"),
            "{e}"
        );
        let mut padded = BitReader::new("DBAAAAAAAAAAA", "header").unwrap();
        padded.read(12, "Type and Version").unwrap();
        padded.finish().unwrap();
        // Past 64 bits of padding too.
        let mut long = BitReader::new(&format!("DB{}B", "A".repeat(20)), "header").unwrap();
        long.read(12, "Type and Version").unwrap();
        let e = long.finish().unwrap_err().to_string();
        assert!(e.contains("bit 138 is set"), "{e}");
    }

    #[test]
    fn reads_across_characters() {
        // "DBABMA" is the GPP header example from the specification:
        // 000011 000001 000000 000001 001100 000000.
        let mut r = BitReader::new("DBABMA", "header").unwrap();
        assert_eq!(r.read(6, "Type").unwrap(), 3);
        assert_eq!(r.read(6, "Version").unwrap(), 1);
        assert_eq!(r.read(12, "NumEntries").unwrap(), 1);
        assert!(!r.bit().unwrap());
        assert_eq!(r.fibonacci("id").unwrap(), 2);
        assert_eq!(r.remaining(), 8);
    }

    #[test]
    fn fibonacci_codes() {
        for (bits, value) in [
            ("11", 1),
            ("011", 2),
            ("0011", 3),
            ("1011", 4),
            ("01011", 7),
        ] {
            let mut padded = bits.to_owned();
            while padded.len() % 6 != 0 {
                padded.push('0');
            }
            let text: String = padded
                .as_bytes()
                .chunks(6)
                .map(|c| {
                    let n = u8::from_str_radix(std::str::from_utf8(c).unwrap(), 2).unwrap();
                    (b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
                        [n as usize]) as char
                })
                .collect();
            let mut r = BitReader::new(&text, "t").unwrap();
            assert_eq!(r.fibonacci("f").unwrap(), value, "{bits}");
        }
    }

    #[test]
    fn errors_name_the_field_and_never_overrun() {
        let mut r = BitReader::new("A", "core segment").unwrap();
        let e = r.read(7, "Version").unwrap_err();
        assert!(e.to_string().contains("Version"), "{e}");
        assert!(
            BitReader::new("AB+C", "core segment")
                .unwrap_err()
                .to_string()
                .contains("character 3")
        );
        let mut ones = BitReader::new("__________", "s").unwrap();
        assert!(ones.fibonacci("f").is_ok());
        let mut alternating = BitReader::new(&"q".repeat(40), "s").unwrap();
        assert!(
            alternating
                .fibonacci("f")
                .unwrap_err()
                .to_string()
                .contains("too large")
        );
    }
}
