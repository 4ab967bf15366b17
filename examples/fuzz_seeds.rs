//! Writes the seed corpora of the fuzz targets (`fuzz/`) into `fuzz/corpus/<target>/`, derived
//! from the protocol vectors by `shardgrid::fuzzing::seeds`. Existing files are kept, so a
//! corpus libFuzzer has grown stays as it is.
//!
//! `cargo run --example fuzz_seeds [-- VECTORS_DIR [CORPUS_DIR]]`; the defaults are
//! `../shared/protocol/vectors` beside the repository (or `/work/shared/protocol/vectors`) and
//! `fuzz/corpus`.

use std::path::PathBuf;

use shardgrid::fuzzing::seeds;

/// FNV-1a, 64 bits: names a seed by its content, so writing twice adds nothing.
fn content_name(bytes: &[u8]) -> String {
    let hash = bytes
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3));
    format!("seed-{hash:016x}")
}

fn main() -> std::io::Result<()> {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let mut args = std::env::args_os().skip(1).map(PathBuf::from);
    let vectors = args.next().unwrap_or_else(|| {
        let beside_repo = root.join("../shared/protocol/vectors");
        if beside_repo.is_dir() {
            beside_repo
        } else {
            PathBuf::from("/work/shared/protocol/vectors")
        }
    });
    let corpus = args.next().unwrap_or_else(|| root.join("fuzz/corpus"));
    for target in seeds::TARGETS {
        let directory = corpus.join(target);
        std::fs::create_dir_all(&directory)?;
        let seeds = seeds::for_target(target, &vectors)?;
        for seed in &seeds {
            std::fs::write(directory.join(content_name(seed)), seed)?;
        }
        println!("{target}: {} seeds in {}", seeds.len(), directory.display());
    }
    Ok(())
}
