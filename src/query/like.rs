//! shardgrid::query::like: case-insensitive wildcard matching for `like` (`%` = any run of
//! characters, `_` = exactly one, PROTOCOL.md §6.8) and the case-insensitive substring test of
//! `contains` (DECISIONS.md §1.6). A pattern is split and case-folded once, when the query is
//! parsed; matching then allocates nothing and never backtracks across a `%`. It leaves out
//! regexes and everything about attributes and values: it sees two strings.
//!
//! Cost: a segment without `_` (every `contains` needle, most `like` patterns) is found with
//! Knuth–Morris–Pratt, in time linear in text plus pattern. A middle segment that holds a `_` is
//! tried at each position, up to text length times segment length; `PATTERN_BYTES_MAX` bounds
//! the segment.

/// One position of a pattern segment: a literal character, case-folded by `fold`, or `_`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Token {
    Char(char),
    AnyChar,
}

/// A run of a pattern between two `%` signs.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Segment {
    tokens: Vec<Token>,
    /// For a segment without `_`, the KMP failure function: `failure[i]` is the length of the
    /// longest proper prefix of `tokens[..=i]` that is also its suffix.
    failure: Option<Vec<usize>>,
}

impl Segment {
    fn new(tokens: Vec<Token>) -> Self {
        let failure = tokens.iter().all(|token| *token != Token::AnyChar).then(|| {
            let mut failure = vec![0; tokens.len()];
            let mut matched = 0;
            for index in 1..tokens.len() {
                while matched > 0 && tokens[index] != tokens[matched] {
                    matched = failure[matched - 1];
                }
                if tokens[index] == tokens[matched] {
                    matched += 1;
                }
                failure[index] = matched;
            }
            failure
        });
        Segment { tokens, failure }
    }

    /// Matches the segment at byte offset `start` of `text`; returns the byte offset after it.
    fn match_at(&self, text: &str, start: usize) -> Option<usize> {
        let mut characters = text[start..].char_indices();
        for token in &self.tokens {
            let (_, character) = characters.next()?;
            if let Token::Char(expected) = token {
                if *expected != fold(character) {
                    return None;
                }
            }
        }
        Some(start + characters.offset())
    }

    /// The leftmost match of the segment in `text` starting at or after byte offset `from`;
    /// returns the byte offset just after it.
    fn find_from(&self, text: &str, from: usize) -> Option<usize> {
        if self.tokens.is_empty() {
            return Some(from);
        }
        let Some(failure) = &self.failure else {
            let mut starts = text[from..].char_indices().map(|(offset, _)| from + offset);
            return starts.find_map(|start| self.match_at(text, start));
        };
        let mut matched = 0;
        for (offset, character) in text[from..].char_indices() {
            let token = Token::Char(fold(character));
            while matched > 0 && self.tokens[matched] != token {
                matched = failure[matched - 1];
            }
            if self.tokens[matched] == token {
                matched += 1;
            }
            if matched == self.tokens.len() {
                return Some(from + offset + character.len_utf8());
            }
        }
        None
    }
}

/// A parsed `like` pattern: the segments between its `%` signs. With no `%` the one segment must
/// cover the whole text; otherwise the first is a prefix, the last a suffix, and the middle ones
/// must appear in order between them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LikePattern {
    segments: Vec<Segment>,
}

impl LikePattern {
    /// Parses a `like` pattern: every character other than `%` and `_` is literal.
    pub(crate) fn like(pattern: &str) -> Self {
        let token = |character: char| match character {
            '_' => Token::AnyChar,
            literal => Token::Char(fold(literal)),
        };
        let segments = pattern.split('%').map(|segment| Segment::new(segment.chars().map(token).collect()));
        LikePattern { segments: segments.collect() }
    }

    /// The pattern that matches any text containing `needle`, every character of it literal.
    pub(crate) fn substring(needle: &str) -> Self {
        let literal = Segment::new(needle.chars().map(|character| Token::Char(fold(character))).collect());
        LikePattern { segments: vec![Segment::new(Vec::new()), literal, Segment::new(Vec::new())] }
    }

    /// Whether the whole of `text` matches. Taking each middle segment at its leftmost place is
    /// optimal because a `%` can absorb whatever lies between, so no choice is ever revisited.
    pub(crate) fn matches(&self, text: &str) -> bool {
        let (first, rest) = self.segments.split_first().expect("split yields at least one segment");
        let Some((last, middle)) = rest.split_last() else {
            return first.match_at(text, 0) == Some(text.len());
        };
        let Some(mut position) = first.match_at(text, 0) else { return false };
        // The suffix is pinned to the end of the text; middle segments must fit before it.
        let Some(suffix_start) = start_of_last_chars(text, last.tokens.len()) else {
            return false;
        };
        if suffix_start < position {
            return false;
        }
        let before_suffix = &text[..suffix_start];
        for segment in middle {
            match segment.find_from(before_suffix, position) {
                Some(end) => position = end,
                None => return false,
            }
        }
        last.match_at(text, suffix_start) == Some(text.len())
    }
}

/// The byte offset where the last `count` characters of `text` begin, if it has that many.
fn start_of_last_chars(text: &str, count: usize) -> Option<usize> {
    if count == 0 {
        return Some(text.len());
    }
    text.char_indices().rev().nth(count - 1).map(|(offset, _)| offset)
}

/// The case fold: a character's lowercase form when that is one character. The one character
/// whose lowercase is two (`İ`, U+0130) stays itself, which no other character folds to, so two
/// characters fold alike exactly when their lowercase forms are equal.
fn fold(character: char) -> char {
    let mut lower = character.to_lowercase();
    match (lower.next(), lower.next()) {
        (Some(single), None) => single,
        _ => character,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::test_support::Prng;

    /// A slow, obviously correct matcher: recursion over characters.
    fn naive_like(pattern: &[char], text: &[char]) -> bool {
        match pattern.split_first() {
            None => text.is_empty(),
            Some(('%', rest)) => (0..=text.len()).any(|skip| naive_like(rest, &text[skip..])),
            Some((token, rest)) => match text.split_first() {
                None => false,
                Some((character, text_rest)) => {
                    (*token == '_' || token.to_lowercase().eq(character.to_lowercase())) && naive_like(rest, text_rest)
                }
            },
        }
    }

    /// Goal: `%` and `_` behave as §6.8 says, case-insensitively, over whole strings.
    /// Method: chosen patterns with known answers.
    #[test]
    fn like_examples() {
        let cases = [
            ("abc", "abc", true),
            ("abc", "ABC", true),
            ("abc", "abcd", false),
            ("a%", "apple", true),
            ("a%", "banana", false),
            ("%an%", "banana", true),
            ("%AN", "bAn", true),
            ("_", "é", true),
            ("_", "", false),
            ("__", "é", false),
            ("a_c", "abc", true),
            ("a_c", "ac", false),
            ("%", "", true),
            ("", "", true),
            ("", "x", false),
            ("a%a", "a", false),
            ("a%a", "aa", true),
            ("%ab%ab%", "abab", true),
            ("%ab%ab%", "aba", false),
            ("a%b%c", "axxbyyc", true),
            ("a%b%c", "axxcyyb", false),
            ("100%", "100 percent", true),
            ("x.y", "xzy", false),
            ("Ünïcode%", "üNÏCODE rocks", true),
        ];
        for (pattern, text, expected) in cases {
            assert_eq!(LikePattern::like(pattern).matches(text), expected, "{pattern:?} on {text:?}");
        }
    }

    /// Goal: a substring pattern treats `%` and `_` as literals and ignores case.
    /// Method: chosen needles.
    #[test]
    fn substring_examples() {
        assert!(LikePattern::substring("ELL").matches("hello"));
        assert!(LikePattern::substring("").matches(""));
        assert!(!LikePattern::substring("_").matches("a"));
        assert!(LikePattern::substring("50%").matches("up 50% today"));
        assert!(!LikePattern::substring("lo!").matches("hello"));
    }

    /// Goal: the segment matcher (KMP and position-by-position alike) agrees with a naive
    /// recursive matcher on random input, for `like` and for substrings. Method: a seeded PRNG
    /// generates patterns and texts over a tiny alphabet (so matches and repeats are common); a
    /// failure prints the case, and the fixed seed replays it.
    #[test]
    fn like_matches_naive_model() {
        const TEXT_ALPHABET: [char; 6] = ['a', 'B', 'b', 'é', 'İ', 'i'];
        const PATTERN_ALPHABET: [char; 7] = ['a', 'B', 'b', 'É', 'i', '%', '_'];
        let mut prng = Prng::from_seed(7);
        let mut pick = |alphabet: &[char], length_max: u64| -> String {
            let length = prng.below(length_max + 1);
            (0..length).map(|_| alphabet[prng.below(alphabet.len() as u64) as usize]).collect()
        };
        for case in 0..30_000 {
            let pattern = pick(&PATTERN_ALPHABET, 7);
            let text = pick(&TEXT_ALPHABET, 9);
            let pattern_chars: Vec<char> = pattern.chars().collect();
            let text_chars: Vec<char> = text.chars().collect();
            assert_eq!(
                LikePattern::like(&pattern).matches(&text),
                naive_like(&pattern_chars, &text_chars),
                "case {case}: like {pattern:?} on {text:?}"
            );
            let needle = pick(&PATTERN_ALPHABET[..5], 4);
            let wrapped: Vec<char> = ['%'].into_iter().chain(needle.chars()).chain(['%']).collect();
            assert_eq!(
                LikePattern::substring(&needle).matches(&text),
                naive_like(&wrapped, &text_chars),
                "case {case}: substring {needle:?} in {text:?}"
            );
        }
    }
}
