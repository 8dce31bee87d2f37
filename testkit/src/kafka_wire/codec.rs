//! The primitive fields of the Kafka protocol as `kafka_wire` reads and writes them: integers,
//! unsigned varints, strings, arrays and tagged fields, in both the classic encoding and the
//! flexible one (compact lengths as varints, tagged fields after each structure).

/// A reader over a frame. Every read returns `None` past the end, so a truncated or foreign
/// frame makes the whole rewrite give up instead of producing garbage.
pub(super) struct Cursor<'a> {
    b: &'a [u8],
    /// Where the next read starts.
    pub(super) at: usize,
    flexible: bool,
}

impl<'a> Cursor<'a> {
    /// Reads `b` from `at` on, in the flexible encoding or the classic one.
    pub(super) fn new(b: &'a [u8], at: usize, flexible: bool) -> Cursor<'a> {
        Cursor { b, at, flexible }
    }
    pub(super) fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let s = self.b.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(s)
    }
    pub(super) fn i8(&mut self) -> Option<i8> {
        Some(i8::from_be_bytes(self.take(1)?.try_into().ok()?))
    }
    pub(super) fn i16(&mut self) -> Option<i16> {
        Some(i16::from_be_bytes(self.take(2)?.try_into().ok()?))
    }
    pub(super) fn i32(&mut self) -> Option<i32> {
        Some(i32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }
    fn uvarint(&mut self) -> Option<u64> {
        let mut v = 0u64;
        for shift in (0..64).step_by(7) {
            let byte = self.take(1)?[0];
            v |= u64::from(byte & 0x7f) << shift;
            if byte & 0x80 == 0 {
                return Some(v);
            }
        }
        None
    }
    /// An array's element count (`None` for a null array is folded into 0).
    pub(super) fn array_len(&mut self) -> Option<usize> {
        if self.flexible {
            Some(usize::try_from(self.uvarint()?.saturating_sub(1)).ok()?)
        } else {
            Some(usize::try_from(self.i32()?.max(0)).ok()?)
        }
    }
    /// A (nullable) string.
    pub(super) fn string(&mut self) -> Option<Option<String>> {
        let len = if self.flexible {
            match self.uvarint()? {
                0 => return Some(None),
                n => usize::try_from(n - 1).ok()?,
            }
        } else {
            match self.i16()? {
                n if n < 0 => return Some(None),
                n => usize::try_from(n).ok()?,
            }
        };
        Some(Some(String::from_utf8_lossy(self.take(len)?).into_owned()))
    }
    /// Skips the tagged fields that end a structure in the flexible encoding; the classic one
    /// has none.
    pub(super) fn tagged(&mut self) -> Option<()> {
        if self.flexible {
            for _ in 0..self.uvarint()? {
                self.uvarint()?;
                let size = usize::try_from(self.uvarint()?).ok()?;
                self.take(size)?;
            }
        }
        Some(())
    }
    /// Skips an array of i32 (the replica lists of a partition).
    pub(super) fn i32_array(&mut self) -> Option<()> {
        let n = self.array_len()?;
        self.take(n.checked_mul(4)?)?;
        Some(())
    }
}

pub(super) fn put_uvarint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub(super) fn put_array_len(out: &mut Vec<u8>, n: usize, flexible: bool) {
    if flexible {
        put_uvarint(out, n as u64 + 1);
    } else {
        out.extend_from_slice(&(n as i32).to_be_bytes());
    }
}

/// A non-flexible (nullable) string.
pub(crate) fn put_str(out: &mut Vec<u8>, s: Option<&str>) {
    match s {
        Some(s) => {
            out.extend_from_slice(&(s.len() as i16).to_be_bytes());
            out.extend_from_slice(s.as_bytes());
        }
        None => out.extend_from_slice(&(-1i16).to_be_bytes()),
    }
}
