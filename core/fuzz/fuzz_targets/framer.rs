//! The framer on arbitrary bytes: never panics, keeps its buffer within the limit plus one
//! chunk, and gives the same frames however the bytes are chunked (the first byte of the
//! input picks the chunk size).
#![no_main]

use confab_core::framer::{Frame, Framer, FramerLimits};
use libfuzzer_sys::fuzz_target;

const LIMITS: FramerLimits = FramerLimits { stanza_bytes_max: 2048, depth_max: 8, attributes_max: 8, namespace_declarations_max: 4 };

/// What a framer makes of `input` pushed in `chunk`-byte pieces: one line per frame, the error
/// last, and whether the stream was restarted after a `<success/>`-like frame.
fn frames(input: &[u8], chunk: usize) -> Vec<String> {
    let mut framer = Framer::new(LIMITS);
    let mut out = Vec::new();
    for piece in input.chunks(chunk.max(1)) {
        framer.push(piece);
        loop {
            match framer.next_frame() {
                Ok(Some(Frame::Stanza(stanza))) => {
                    let restart = stanza.name == "success";
                    out.push(format!("{} {:?} {:?}", stanza.name, stanza.bytes(), stanza.with_from("a@b/c")));
                    // The copy a recipient gets must stand on its own: building its tree works.
                    let _ = stanza.element();
                    if restart {
                        framer.restart(false);
                    }
                }
                Ok(Some(frame)) => out.push(format!("{frame:?}")),
                Ok(None) => break,
                Err(error) => {
                    out.push(format!("error {}", error.condition()));
                    return out;
                }
            }
            assert!(framer.buffered_len() <= LIMITS.stanza_bytes_max + chunk.max(1), "buffer bound");
        }
    }
    out
}

fuzz_target!(|data: &[u8]| {
    let Some((&first, input)) = data.split_first() else { return };
    let whole = frames(input, input.len().max(1));
    let chunked = frames(input, usize::from(first % 17) + 1);
    assert_eq!(whole, chunked, "frames depend on chunking");
});
