//! Replays every fuzz target's seed corpus (`fuzz/corpus/TARGET/`) through the same library function the
//! cargo-fuzz target calls, plus a fixed set of deterministic mutations of each seed, so that `cargo test`
//! exercises every decoder on every CI run. A panic in a decoder fails the test.

use std::fs;
use std::path::PathBuf;

/// Mutations derived from each seed: enough to leave the happy path of every decoder, cheap enough to run
/// on every `cargo test`.
const MUTATIONS_PER_SEED: usize = 300;

type Target = fn(&[u8]);

fn targets() -> Vec<(&'static str, Target)> {
    vec![
        ("to_master", protocol::fuzz::to_master as Target),
        ("from_master", protocol::fuzz::from_master),
        ("mailbox", protocol::fuzz::mailbox),
        ("domain", protocol::fuzz::domain),
        ("path", protocol::fuzz::path),
        ("smtp_command", protocol::fuzz::smtp_command),
        ("smtp_data", protocol::fuzz::smtp_data),
        ("header", protocol::fuzz::header),
        ("queue_file", protocol::fuzz::queue_file),
        ("to_cleanup", protocol::fuzz::to_cleanup),
        ("from_cleanup", protocol::fuzz::from_cleanup),
        ("to_qmgr", protocol::fuzz::to_qmgr),
        ("to_agent", protocol::fuzz::to_agent),
        ("from_agent", protocol::fuzz::from_agent),
        ("to_bounce", protocol::fuzz::to_bounce),
        ("from_bounce", protocol::fuzz::from_bounce),
        ("main_cf", conf::fuzz::main_cf),
        ("master_cf", conf::fuzz::master_cf),
        ("table", policy::fuzz::table),
        ("aliases", policy::fuzz::aliases),
        ("passwd", policy::fuzz::passwd),
    ]
}

fn corpus_dir(target: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../fuzz/corpus")
        .join(target)
}

/// xorshift64*: a fixed, dependency-free sequence so a failure reproduces exactly.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    fn below(&mut self, n: usize) -> usize {
        if n == 0 {
            0
        } else {
            (self.next() % n as u64) as usize
        }
    }
}

fn mutate(seed: &[u8], rng: &mut Rng) -> Vec<u8> {
    let mut data = seed.to_vec();
    for _ in 0..=rng.below(4) {
        match rng.below(6) {
            0 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] ^= 1 << rng.below(8);
            }
            1 if !data.is_empty() => {
                let i = rng.below(data.len());
                data[i] = rng.next() as u8;
            }
            2 => data.truncate(rng.below(data.len() + 1)),
            3 => {
                let i = rng.below(data.len() + 1);
                data.insert(i, rng.next() as u8);
            }
            4 if !data.is_empty() => {
                let start = rng.below(data.len());
                let end = start + rng.below(data.len() - start) + 1;
                let copy = data[start..end].to_vec();
                let at = rng.below(data.len() + 1);
                data.splice(at..at, copy);
            }
            _ => {
                // Interesting bytes for these grammars: delimiters, escapes, high varints.
                const SPECIAL: &[u8] = b"\0\r\n\t \\\"<>@[]:.,$#{}()=-\xff\x80";
                let i = rng.below(data.len() + 1);
                data.insert(i, SPECIAL[rng.below(SPECIAL.len())]);
            }
        }
    }
    data
}

#[test]
fn every_target_has_a_seed_corpus_and_survives_it() {
    let mut rng = Rng(0x5EED_0F90_57E2);
    for (name, target) in targets() {
        let dir = corpus_dir(name);
        let mut seeds: Vec<PathBuf> = fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|entry| entry.expect("corpus entry").path())
            .collect();
        seeds.sort();
        assert!(!seeds.is_empty(), "{name}: empty seed corpus");
        for seed_path in &seeds {
            let seed = fs::read(seed_path).expect("read seed");
            target(&seed);
            for _ in 0..MUTATIONS_PER_SEED {
                target(&mutate(&seed, &mut rng));
            }
        }
        eprintln!(
            "{name}: {} seeds, {} inputs each",
            seeds.len(),
            MUTATIONS_PER_SEED + 1
        );
    }
}
