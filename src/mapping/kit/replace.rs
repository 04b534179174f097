//! `@replace`: literal search and replace with JavaScript `String.prototype.replace`
//! semantics.
//!
//! The reference escapes every regular-expression metacharacter of the pattern and
//! builds a `RegExp` with the `g` (unless `global: false`) and `i` (with
//! `ignorecase`) flags, so the pattern is plain text. The replacement is still a
//! JavaScript replacement string: `$$`, `$&`, `` $` `` and `$'` are expanded.
//! Case-insensitive matching uses the non-Unicode `RegExp` canonicalisation
//! (simple upper-casing of each character).

/// The result would be longer than the limit it was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TooLong;

/// Replaces `pattern` (literal, non-empty) in `value`; `Err` as soon as the
/// result passes `limit` bytes (it then holds at most `limit` plus one
/// replacement's expansion, which is at most `value`'s length more).
pub(crate) fn replace_literal(
    value: &str,
    pattern: &str,
    replacement: &str,
    global: bool,
    ignore_case: bool,
    limit: usize,
) -> Result<String, TooLong> {
    if pattern.is_empty() {
        // Not reachable from the directive (an empty pattern is rejected), but an
        // empty JavaScript pattern matches at the start only when not global.
        return Ok(value.to_owned());
    }
    let hay: Vec<(usize, char)> = value.char_indices().collect();
    let needle: Vec<char> = pattern.chars().map(|c| canon(c, ignore_case)).collect();
    let mut out = String::with_capacity(value.len());
    let mut copied_to = 0; // byte offset in `value` up to which the text was copied
    let mut i = 0; // index into `hay`
    while i + needle.len() <= hay.len() {
        let matched = needle
            .iter()
            .enumerate()
            .all(|(k, n)| hay.get(i + k).is_some_and(|&(_, c)| canon(c, ignore_case) == *n));
        if !matched {
            i += 1;
            continue;
        }
        let start = hay.get(i).map_or(value.len(), |&(b, _)| b);
        let end = hay.get(i + needle.len()).map_or(value.len(), |&(b, _)| b);
        out.push_str(value.get(copied_to..start).unwrap_or(""));
        expand_replacement(replacement, value, start, end, &mut out);
        if out.len() > limit {
            return Err(TooLong);
        }
        copied_to = end;
        i += needle.len();
        if !global {
            break;
        }
    }
    out.push_str(value.get(copied_to..).unwrap_or(""));
    if out.len() > limit {
        return Err(TooLong);
    }
    Ok(out)
}

/// JavaScript's `GetSubstitution` for a match without capture groups.
fn expand_replacement(replacement: &str, value: &str, start: usize, end: usize, out: &mut String) {
    let mut chars = replacement.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        match chars.peek() {
            Some('$') => {
                out.push('$');
                chars.next();
            }
            Some('&') => {
                out.push_str(value.get(start..end).unwrap_or(""));
                chars.next();
            }
            Some('`') => {
                out.push_str(value.get(..start).unwrap_or(""));
                chars.next();
            }
            Some('\'') => {
                out.push_str(value.get(end..).unwrap_or(""));
                chars.next();
            }
            _ => out.push('$'),
        }
    }
}

/// The `RegExp` `Canonicalize` operation without the `u` flag.
fn canon(c: char, ignore_case: bool) -> char {
    if !ignore_case || c.len_utf16() != 1 {
        return c;
    }
    let mut upper = c.to_uppercase();
    match (upper.next(), upper.next()) {
        (Some(u), None) if u.len_utf16() == 1 && !((c as u32) >= 128 && (u as u32) < 128) => u,
        _ => c,
    }
}

#[cfg(test)]
mod tests {
    use super::{replace_literal, TooLong};

    #[test]
    fn results_past_the_limit_are_refused_while_they_grow() {
        // `$'` copies the rest of the text at every match: quadratic growth.
        let value = "a".repeat(2_000);
        assert_eq!(replace_literal(&value, "a", "$'", true, false, 100_000), Err(TooLong));
        assert_eq!(
            replace_literal("abc", "b", "$&$&", true, false, 4).map(|s| s.len()),
            Ok(4)
        );
        assert_eq!(replace_literal("abc", "b", "$&$&$&", true, false, 4), Err(TooLong));
    }

    #[test]
    fn literal_and_flags() {
        assert_eq!(
            replace_literal("many+different+things", "+", "_", true, false, usize::MAX).unwrap(),
            "many_different_things"
        );
        assert_eq!(
            replace_literal("many+different+things", "+", "_", false, false, usize::MAX).unwrap(),
            "many_different+things"
        );
        assert_eq!(
            replace_literal("aab-----AaB---aab", "AaB", "nice", true, true, usize::MAX).unwrap(),
            "nice-----nice---nice"
        );
        assert_eq!(
            replace_literal("cWWl-story-ww", "WW", "oo", true, false, usize::MAX).unwrap(),
            "cool-story-ww"
        );
        assert_eq!(
            replace_literal("a.b.c", ".", "", true, false, usize::MAX).unwrap(),
            "abc"
        );
        assert_eq!(
            replace_literal("aaa", "aa", "b", true, false, usize::MAX).unwrap(),
            "ba"
        );
        assert_eq!(
            replace_literal("héllo wörld", "ö", "o", true, false, usize::MAX).unwrap(),
            "héllo world"
        );
    }

    #[test]
    fn replacement_patterns() {
        assert_eq!(
            replace_literal("abc", "b", "[$&]", true, false, usize::MAX).unwrap(),
            "a[b]c"
        );
        assert_eq!(
            replace_literal("abc", "b", "$$", true, false, usize::MAX).unwrap(),
            "a$c"
        );
        assert_eq!(
            replace_literal("abc", "b", "$`", true, false, usize::MAX).unwrap(),
            "aac"
        );
        assert_eq!(
            replace_literal("abc", "b", "$'", true, false, usize::MAX).unwrap(),
            "acc"
        );
        assert_eq!(
            replace_literal("abc", "b", "$1$", true, false, usize::MAX).unwrap(),
            "a$1$c"
        );
        assert_eq!(
            replace_literal("Signed Up", "S", "$", true, true, usize::MAX).unwrap(),
            "$igned Up"
        );
    }

    #[test]
    fn ignore_case_canonicalisation() {
        // Non-ASCII characters never match ASCII ones (the long s / Kelvin sign rule).
        assert_eq!(replace_literal("ſ", "s", "x", true, true, usize::MAX).unwrap(), "ſ");
        assert_eq!(
            replace_literal("\u{212A}", "k", "x", true, true, usize::MAX).unwrap(),
            "\u{212A}"
        );
        assert_eq!(replace_literal("K", "k", "x", true, true, usize::MAX).unwrap(), "x");
        assert_eq!(replace_literal("ÄÖ", "äö", "x", true, true, usize::MAX).unwrap(), "x");
    }
}
