//! Text that people read back (a campaign id quoted in a consumer's reasons,
//! a staff reason in the read log, a group name in a fairness report): the
//! characters it may not hold, because they would add lines of their own,
//! print as nothing, or turn the text around.

/// Format characters that print as nothing, or turn text around: two names
/// that look the same must be the same.
const INVISIBLE: [char; 18] = [
    '\u{00AD}', '\u{200B}', '\u{200C}', '\u{200D}', '\u{200E}', '\u{200F}', '\u{202A}', '\u{202B}',
    '\u{202C}', '\u{202D}', '\u{202E}', '\u{2060}', '\u{2066}', '\u{2067}', '\u{2068}', '\u{2069}',
    '\u{FEFF}', '\u{180E}',
];

/// A control character (Cc), a line or paragraph separator (Zl, Zp: they
/// break lines as a newline does), or an invisible or bidirectional
/// format character.
pub fn unprintable(c: char) -> bool {
    // Every identifier of every Score passes here: most are ASCII, where
    // only the controls are unprintable.
    if c.is_ascii() {
        return c.is_ascii_control();
    }
    c.is_control() || matches!(c, '\u{2028}' | '\u{2029}') || INVISIBLE.contains(&c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn separators_and_direction_marks_are_unprintable() {
        for c in [
            '\n', '\u{85}', '\u{2028}', '\u{2029}', '\u{202E}', '\u{200B}',
        ] {
            assert!(unprintable(c), "U+{:04X}", u32::from(c));
        }
        for c in ['a', 'é', 'ß', '€', ' ', '中'] {
            assert!(!unprintable(c), "{c}");
        }
    }
}
