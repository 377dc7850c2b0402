//! `judge::compare` allocates nothing when the outputs are the same, and otherwise only the text
//! it shows, however large the outputs: a global allocator counts this thread's allocations.
//! (Its own test binary, so the counting allocator serves nothing else.)
use onpyrunner_protocol::judge::{compare, CompareMode};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

thread_local! {
    // Const-initialized and without a destructor, so the allocator may touch it.
    static ALLOCATIONS: Cell<usize> = const { Cell::new(0) };
}

struct Counting;

// SAFETY: every call forwards to the system allocator with the caller's arguments; counting
// touches only a thread-local `Cell`, which neither allocates nor unwinds.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: the caller upholds `alloc`'s contract, which is `System`'s.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: `ptr` came from `System` with this layout (every allocation goes through it).
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        let _ = ALLOCATIONS.try_with(|n| n.set(n.get() + 1));
        // SAFETY: as for `dealloc`, and the caller upholds `realloc`'s contract.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

fn allocations<T>(f: impl FnOnce() -> T) -> (T, usize) {
    let before = ALLOCATIONS.with(Cell::get);
    let value = f();
    (value, ALLOCATIONS.with(Cell::get) - before)
}

const SIZE: usize = 16 * 1024 * 1024;
const LINE: &[u8] = b"123456789 987654321 555\n";

#[test]
fn equal_outputs_allocate_nothing() {
    let expected = LINE.repeat(SIZE / LINE.len());
    let same = expected.clone();
    for mode in [CompareMode::Lines, CompareMode::Exact] {
        let (d, n) = allocations(|| compare(&expected, &same, mode));
        assert_eq!((d, n), (None, 0), "{mode:?}");
    }
    // Equal only by the judges' rule: the walk goes line by line, still without a copy.
    let crlf = LINE
        .strip_suffix(b"\n")
        .unwrap()
        .iter()
        .chain(b"  \r\n")
        .copied()
        .collect::<Vec<u8>>()
        .repeat(SIZE / LINE.len());
    let (d, n) = allocations(|| compare(&expected, &crlf, CompareMode::Lines));
    assert_eq!((d, n), (None, 0));
}

#[test]
fn a_difference_allocates_only_what_it_shows_whatever_the_size() {
    let count = |lines: usize| {
        let expected = LINE.repeat(lines);
        let mut actual = expected.clone();
        let last = actual.len() - 2;
        actual[last] = b'0';
        let (d, n) = allocations(|| compare(&expected, &actual, CompareMode::Lines));
        assert_eq!(d.expect("they differ").line, lines as u64);
        n
    };
    let small = count(10);
    assert_eq!(count(SIZE / LINE.len()), small);
    assert!(small < 64, "{small} allocations");
}

#[test]
fn a_huge_line_is_shown_without_a_copy() {
    let expected = vec![b'z'; SIZE];
    let mut actual = expected.clone();
    actual[SIZE / 2] = 0x1b;
    let (d, n) = allocations(|| compare(&expected, &actual, CompareMode::Exact));
    assert!(d.expect("they differ").actual.unwrap().contains("\\x1b"));
    assert!(n < 64, "{n} allocations");
}
