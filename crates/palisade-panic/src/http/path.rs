//! A bounded, inline copy of a request path, for the log line of a panic.

use std::fmt;

/// How many bytes of the path are kept. Longer paths are cut (at a UTF-8
/// boundary) and shown with a trailing `…`.
pub(crate) const PATH_CAPACITY: usize = 96;

/// The first [`PATH_CAPACITY`] bytes of a path, copied without allocating.
#[derive(Clone, Copy)]
pub(crate) struct PathPrefix {
    bytes: [u8; PATH_CAPACITY],
    len: u8,
    truncated: bool,
}

impl PathPrefix {
    #[inline]
    pub(crate) fn new(path: &str) -> Self {
        let mut end = path.len().min(PATH_CAPACITY);
        while !path.is_char_boundary(end) {
            end -= 1;
        }
        let mut bytes = [0; PATH_CAPACITY];
        copy_short(&mut bytes[..end], &path.as_bytes()[..end]);
        Self {
            bytes,
            // `end <= PATH_CAPACITY`, which fits in a u8.
            len: end as u8,
            truncated: end < path.len(),
        }
    }

    /// The kept part of the path.
    pub(crate) fn as_str(&self) -> &str {
        // The copy ends on a char boundary of a `str`, so it is valid UTF-8;
        // the fallback is never taken.
        std::str::from_utf8(&self.bytes[..usize::from(self.len)]).unwrap_or_default()
    }
}

/// Copies `src` into `dst` (of the same length, at most
/// [`PATH_CAPACITY`]) with fixed-size moves the compiler emits inline: a
/// path is usually a few dozen bytes, which a call to `memcpy` would cost
/// more to reach than to copy. Lengths that are not a power of two are
/// copied as two overlapping pieces.
#[inline(always)]
fn copy_short(dst: &mut [u8], src: &[u8]) {
    #[inline(always)]
    fn piece<const N: usize>(dst: &mut [u8], src: &[u8]) {
        let len = src.len();
        let (head, tail) = (&src[..N], &src[len - N..]);
        dst[..N].copy_from_slice(head);
        dst[len - N..].copy_from_slice(tail);
    }
    debug_assert_eq!(dst.len(), src.len());
    match src.len() {
        0 => {}
        1 => dst[0] = src[0],
        2..4 => piece::<2>(dst, src),
        4..8 => piece::<4>(dst, src),
        8..16 => piece::<8>(dst, src),
        16..32 => piece::<16>(dst, src),
        32..64 => piece::<32>(dst, src),
        _ => {
            // 64 bytes up to the capacity: two 64-byte moves that overlap
            // or meet, which covers every length up to 128.
            piece::<64>(dst, src);
        }
    }
}

const _: () = assert!(PATH_CAPACITY <= 128, "copy_short covers up to 128 bytes");

impl fmt::Display for PathPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())?;
        if self.truncated {
            f.write_str("…")?;
        }
        Ok(())
    }
}

impl fmt::Debug for PathPrefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&self.to_string(), f)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    #[test]
    fn short_paths_are_kept_whole() {
        let p = PathPrefix::new("/users/42");
        assert_eq!(p.as_str(), "/users/42");
        assert!(!p.truncated);
        assert_eq!(p.to_string(), "/users/42");
    }

    #[test]
    fn long_paths_are_cut_and_marked() {
        let long = format!("/{}", "a".repeat(200));
        let p = PathPrefix::new(&long);
        assert_eq!(p.as_str().len(), PATH_CAPACITY);
        assert!(p.truncated);
        assert!(p.to_string().ends_with('…'));
    }

    #[test]
    fn every_length_is_copied_exactly() {
        let source: String = (0..PATH_CAPACITY)
            .map(|i| char::from(b'a' + (i % 26) as u8))
            .collect();
        for len in 0..=PATH_CAPACITY {
            let p = PathPrefix::new(&source[..len]);
            assert_eq!(p.as_str(), &source[..len]);
            assert!(p.bytes[len..].iter().all(|&b| b == 0), "len {len}");
        }
    }

    proptest! {
        #[test]
        fn the_prefix_is_a_valid_bounded_prefix(path in "\\PC{0,150}") {
            let p = PathPrefix::new(&path);
            prop_assert!(path.starts_with(p.as_str()));
            prop_assert!(p.as_str().len() <= PATH_CAPACITY);
            prop_assert_eq!(p.truncated, p.as_str().len() < path.len());
            // Nothing is cut that would have fitted: at most one char short.
            if p.truncated {
                prop_assert!(p.as_str().len() > PATH_CAPACITY - 4);
            }
        }
    }
}
