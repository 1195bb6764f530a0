//! CRC-32C (Castagnoli, the checksum of iSCSI, ext4 metadata and SCTP), computed
//! eight octets at a time with tables built at compile time.
//!
//! Trusts: nothing; it only sums bytes. A CRC detects torn writes and media
//! errors, not deliberate changes: anyone who can write a queue file can also
//! fix its checksum.

/// The reflected Castagnoli polynomial.
const POLY: u32 = 0x82F6_3B78;

const fn make_tables() -> [[u32; 256]; 8] {
    let mut tables = [[0u32; 256]; 8];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][i] = crc;
        i += 1;
    }
    let mut i = 0;
    while i < 256 {
        let mut t = 1;
        while t < 8 {
            let prev = tables[t - 1][i];
            tables[t][i] = (prev >> 8) ^ tables[0][(prev & 0xff) as usize];
            t += 1;
        }
        i += 1;
    }
    tables
}

static TABLES: [[u32; 256]; 8] = make_tables();

/// A running CRC-32C.
#[derive(Debug, Clone, Copy)]
pub struct Crc32c {
    /// The inverted running value.
    state: u32,
}

impl Default for Crc32c {
    fn default() -> Self {
        Self::new()
    }
}

impl Crc32c {
    pub fn new() -> Crc32c {
        Crc32c { state: !0 }
    }

    pub fn update(&mut self, data: &[u8]) {
        let t = &TABLES;
        let mut crc = self.state;
        let mut blocks = data.chunks_exact(8);
        for b in &mut blocks {
            let lo = u32::from_le_bytes([b[0], b[1], b[2], b[3]]) ^ crc;
            let hi = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
            crc = t[7][(lo & 0xff) as usize]
                ^ t[6][((lo >> 8) & 0xff) as usize]
                ^ t[5][((lo >> 16) & 0xff) as usize]
                ^ t[4][(lo >> 24) as usize]
                ^ t[3][(hi & 0xff) as usize]
                ^ t[2][((hi >> 8) & 0xff) as usize]
                ^ t[1][((hi >> 16) & 0xff) as usize]
                ^ t[0][(hi >> 24) as usize];
        }
        for &b in blocks.remainder() {
            crc = (crc >> 8) ^ t[0][((crc ^ u32::from(b)) & 0xff) as usize];
        }
        self.state = crc;
    }

    pub fn value(&self) -> u32 {
        !self.state
    }

    /// The CRC-32C of `data`.
    pub fn of(data: &[u8]) -> u32 {
        let mut crc = Crc32c::new();
        crc.update(data);
        crc.value()
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn bitwise(data: &[u8]) -> u32 {
        let mut crc = !0u32;
        for &b in data {
            crc ^= u32::from(b);
            for _ in 0..8 {
                crc = if crc & 1 != 0 {
                    (crc >> 1) ^ POLY
                } else {
                    crc >> 1
                };
            }
        }
        !crc
    }

    #[test]
    fn known_values() {
        // The check value of the CRC catalogue, and RFC 3720 appendix B.4.
        assert_eq!(Crc32c::of(b"123456789"), 0xE306_9283);
        assert_eq!(Crc32c::of(&[0u8; 32]), 0x8A91_36AA);
        assert_eq!(Crc32c::of(&[0xffu8; 32]), 0x62A8_AB43);
        let ascending: Vec<u8> = (0..32).collect();
        assert_eq!(Crc32c::of(&ascending), 0x46DD_794E);
        assert_eq!(Crc32c::of(b""), 0);
    }

    proptest! {
        #[test]
        fn tables_agree_with_the_bitwise_definition_in_any_split(
            data in proptest::collection::vec(any::<u8>(), 0..100),
            split in any::<proptest::sample::Index>(),
        ) {
            let at = split.index(data.len() + 1);
            let mut crc = Crc32c::new();
            crc.update(&data[..at]);
            crc.update(&data[at..]);
            prop_assert_eq!(crc.value(), bitwise(&data));
        }
    }
}
