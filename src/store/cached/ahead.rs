//! Read-ahead for the block cache: a data pack read block after block (a
//! restore, a `cp -a` out of the mount, `check --read-data`) has its next
//! blocks fetched by a helper thread while the reader uses the current
//! ones, so that the bucket's latency hides behind the reader's work
//! instead of adding to it once per block.
//!
//! Per pack, a stream remembers the furthest block read. A read just
//! beyond it (one or two blocks) is sequential: the window doubles, up to
//! [`MAX_WINDOW`] blocks, and the blocks of the window not yet cached are
//! fetched with one ranged GET on a helper thread. A read a few blocks
//! behind it keeps the stream (a restore reads files in name order, and
//! the backup wrote their chunks from several threads, so nearby blocks
//! come a little out of order); any other read resets the stream's
//! window: random reads (a mount's) fetch no more than they read. At most [`MAX_JOBS`] helpers run at a time; each ends when its
//! GET is done, so an idle process has none. A reader wanting a block a
//! helper is fetching waits for it rather than asking for it again.

use parking_lot::{Condvar, Mutex};
use std::collections::VecDeque;

/// Most blocks one stream reads ahead.
pub(super) const MAX_WINDOW: u64 = 8;

/// Most helper threads fetching at once.
const MAX_JOBS: usize = 2;

/// Packs followed at once (a restore reads one or two at a time).
const STREAMS: usize = 16;

/// A pack's reads as seen so far.
struct Stream {
    pack: String,
    /// The last block read.
    last: u64,
    /// The furthest block read since the stream began.
    hi: u64,
    /// Blocks to read ahead now (0: not sequential).
    window: u64,
    /// Blocks before this one were fetched or asked for already.
    issued_to: u64,
}

#[derive(Default)]
struct State {
    streams: VecDeque<Stream>,
    /// Blocks `first..end` of a pack being fetched by a helper.
    in_flight: Vec<(String, u64, u64)>,
}

/// The read-ahead state of one cache. See the module docs.
#[derive(Default)]
pub(super) struct ReadAhead {
    st: Mutex<State>,
    done: Condvar,
}

impl ReadAhead {
    /// Note a read of block `b` of `pack` (of `blocks` blocks): the blocks
    /// `first..end` to fetch ahead now, marked as being fetched, if any
    /// are due. `cached(k)` says whether block `k` is here already (those
    /// are not fetched again: a warm cache reads ahead nothing).
    pub(super) fn note(
        &self,
        pack: &str,
        b: u64,
        blocks: u64,
        cached: impl Fn(u64) -> bool,
    ) -> Option<(u64, u64)> {
        let mut st = self.st.lock();
        let i = match st.streams.iter().position(|s| s.pack == pack) {
            Some(i) => i,
            None => {
                if st.streams.len() >= STREAMS {
                    st.streams.pop_front();
                }
                st.streams.push_back(Stream {
                    pack: pack.to_string(),
                    last: b,
                    hi: b,
                    window: 0,
                    issued_to: b + 1,
                });
                return None;
            }
        };
        let jobs = st.in_flight.len();
        let s = &mut st.streams[i];
        if b == s.last {
            return None;
        }
        s.last = b;
        if b + 4 < s.hi || b > s.hi + 2 {
            s.window = 0;
            s.hi = b;
            s.issued_to = b + 1;
            return None;
        }
        if b > s.hi {
            s.window = (s.window * 2).clamp(2, MAX_WINDOW);
            s.hi = b;
        }
        // Ask again once half the window is used.
        let hi = s.hi;
        if s.window == 0 || s.issued_to >= hi + 1 + s.window / 2 || jobs >= MAX_JOBS {
            return None;
        }
        // From the block being read if it is missing: its reader then
        // waits for this GET instead of making one of its own.
        let mut first = s.issued_to.max(b);
        let end = (hi + 1 + s.window).min(blocks);
        s.issued_to = end.max(s.issued_to);
        // Skip what is here or coming; stop at the next such block.
        let busy = |st: &State, k: u64| {
            st.in_flight
                .iter()
                .any(|(p, f, e)| p == pack && (*f..*e).contains(&k))
        };
        while first < end && (cached(first) || busy(&st, first)) {
            first += 1;
        }
        let mut last = first;
        while last < end && !cached(last) && !busy(&st, last) {
            last += 1;
        }
        if first >= last {
            return None;
        }
        st.in_flight.push((pack.to_string(), first, last));
        Some((first, last))
    }

    /// The helper fetching blocks `first..end` of `pack` is done (the
    /// blocks are cached, or the fetch failed and readers fetch them).
    pub(super) fn finished(&self, pack: &str, first: u64, end: u64) {
        let mut st = self.st.lock();
        st.in_flight
            .retain(|(p, f, e)| !(p == pack && *f == first && *e == end));
        self.done.notify_all();
    }

    /// If a helper is fetching block `b` of `pack`, wait until it is done
    /// and return true.
    pub(super) fn wait_for(&self, pack: &str, b: u64) -> bool {
        let mut st = self.st.lock();
        let busy = |st: &State| {
            st.in_flight
                .iter()
                .any(|(p, f, e)| p == pack && (*f..*e).contains(&b))
        };
        if !busy(&st) {
            return false;
        }
        while busy(&st) {
            // Bounded by the helper's GET, itself bounded by the client's
            // timeouts and retries.
            self.done.wait(&mut st);
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sequential reads open a growing window; a jump resets it; cached
    /// blocks are never asked for; a warm stream asks nothing.
    #[test]
    fn windows_grow_on_sequential_reads_only() {
        let a = ReadAhead::default();
        let none = |_: u64| false;
        assert_eq!(
            a.note("p", 0, 100, none),
            None,
            "a first read is not a stream"
        );
        assert_eq!(a.note("p", 1, 100, none), Some((1, 4)));
        a.finished("p", 1, 4);
        assert_eq!(a.note("p", 2, 100, none), Some((4, 7)));
        a.finished("p", 4, 7);
        assert_eq!(a.note("p", 3, 100, none), Some((7, 12)));
        a.finished("p", 7, 12);
        assert_eq!(
            a.note("p", 4, 100, none),
            None,
            "half the window still ahead"
        );
        // A jump: no read-ahead until it is sequential again.
        assert_eq!(a.note("p", 50, 100, none), None);
        assert_eq!(a.note("p", 51, 100, none), Some((51, 54)));
        a.finished("p", 51, 54);
        // The pack's end bounds the window.
        assert_eq!(a.note("q", 97, 99, none), None);
        assert_eq!(a.note("q", 98, 99, none), Some((98, 99)));
        a.finished("q", 98, 99);
        // Cached blocks are skipped, and the run stops at the next one.
        assert_eq!(a.note("r", 0, 100, none), None);
        assert_eq!(a.note("r", 1, 100, |k| k == 1 || k == 3), Some((2, 3)));
        a.finished("r", 2, 3);
        assert_eq!(a.note("s", 0, 100, none), None);
        assert_eq!(a.note("s", 1, 100, |_| true), None, "warm: nothing");
        // A little out of order is still in order.
        assert_eq!(a.note("t", 0, 100, none), None);
        assert_eq!(a.note("t", 2, 100, none), Some((2, 5)));
        a.finished("t", 2, 5);
        assert_eq!(a.note("t", 1, 100, none), None);
        assert_eq!(a.note("t", 3, 100, none), Some((5, 8)));
    }

    /// At most MAX_JOBS fetches at once; a reader of a block being
    /// fetched waits for it.
    #[test]
    fn helpers_are_bounded_and_waited_for() {
        let a = std::sync::Arc::new(ReadAhead::default());
        let none = |_: u64| false;
        for p in ["a", "b", "c"] {
            a.note(p, 0, 100, none);
        }
        assert_eq!(a.note("a", 1, 100, none), Some((1, 4)));
        assert_eq!(a.note("b", 1, 100, none), Some((1, 4)));
        assert_eq!(a.note("c", 1, 100, none), None, "two helpers at most");
        assert!(!a.wait_for("a", 5));
        // A waiter (blocked, or not yet at its wait) is released by the
        // helper's end, never left waiting.
        let b = a.clone();
        let t = std::thread::spawn(move || b.wait_for("a", 3));
        a.finished("a", 1, 4);
        t.join().unwrap();
        assert!(!a.wait_for("a", 3));
        assert_eq!(
            a.note("c", 2, 100, none),
            Some((2, 7)),
            "a helper is free again"
        );
    }
}
