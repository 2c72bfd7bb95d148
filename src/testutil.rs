//! Helpers shared by unit tests: a small deterministic generator for random-edit tests.

/// xorshift64*: deterministic, good enough to shuffle test inputs.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// `text` with one to four characters removed or inserted (from `alphabet`) at random
    /// places.
    pub fn edit(&mut self, text: &str, alphabet: &[char]) -> String {
        let mut t: Vec<char> = text.chars().collect();
        for _ in 0..(1 + self.next() % 4) {
            let at = (self.next() as usize) % (t.len() + 1);
            if self.next().is_multiple_of(2) && at < t.len() {
                t.remove(at);
            } else {
                t.insert(at, alphabet[(self.next() as usize) % alphabet.len()]);
            }
        }
        t.into_iter().collect()
    }
}
