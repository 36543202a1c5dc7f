//! CIFAR-10 loading (from `$FROG_DATA` when set, else from files the test
//! writes) and on malformed files, the synthetic set, and the augmenting
//! loader.

use crate::common;

use std::path::Path;
use std::sync::Arc;

use frog_bench::data::cifar::{load_test, load_train, MEAN, PIXELS, RECORD, STD, TEST_FILE, TRAIN_FILES};
use frog_bench::data::loader::{eval_batches, train_batches};
use approx::assert_abs_diff_eq;
use frog_bench::data::{load, synthetic, DataOptions, Images};

/// Every training file present in `dir` and the test file, as stored: the
/// record counts, balanced test classes, and the first record byte for
/// byte.
fn check_cifar_dir(dir: &Path) -> (usize, usize) {
    let records = |name: &str| std::fs::metadata(dir.join(name)).map(|m| m.len() as usize / RECORD);
    let present: Vec<_> = TRAIN_FILES.iter().filter(|f| dir.join(f).exists()).collect();
    let train = load_train(dir).unwrap_or_else(|e| panic!("{e}"));
    let test = load_test(dir).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(train.len(), present.iter().map(|f| records(f).unwrap()).sum::<usize>());
    assert_eq!(test.len(), records(TEST_FILE).unwrap());
    assert_eq!(train.pixels.len(), train.len() * PIXELS);
    // Every class is present in equal numbers in the test set.
    let mut counts = [0usize; 10];
    for &l in &test.labels {
        counts[usize::from(l)] += 1;
    }
    assert!(counts.iter().all(|&c| c * 10 == test.len()), "{counts:?}");
    // The first record is read as stored.
    let raw = std::fs::read(dir.join(present[0])).unwrap();
    assert_eq!(train.labels[0], raw[0]);
    assert_eq!(&train.pixels[..PIXELS], &raw[1..RECORD]);
    (present.len(), train.len())
}

/// CIFAR-10 from `$FROG_DATA` when it is set (every file of 10,000
/// records), else a small set in its layout that the test writes.
#[test]
fn loads_cifar10_batches() {
    if let Some(dir) = std::env::var_os("FROG_DATA").filter(|v| !v.is_empty()) {
        let (files, images) = check_cifar_dir(Path::new(&dir));
        assert_eq!(images, files * 10_000, "CIFAR-10's training files hold 10,000 records each");
        println!("checked CIFAR-10 in {}: {files} training files, {images} images", Path::new(&dir).display());
        return;
    }
    let dir = common::temp_dir("made-cifar");
    let balanced: Vec<u8> = (0..40).map(|i| i % 10).collect();
    write_records(&dir, "data_batch_2.bin", &[3, 1, 4, 1, 5], 0);
    write_records(&dir, "data_batch_5.bin", &[9, 2, 6], 0);
    write_records(&dir, TEST_FILE, &balanced, 0);
    assert_eq!(check_cifar_dir(&dir), (2, 8));
    println!("FROG_DATA is not set: checked a small set in CIFAR-10's layout written by the test");
    std::fs::remove_dir_all(dir).unwrap();
}

fn write_records(dir: &Path, name: &str, labels: &[u8], extra: usize) {
    let mut bytes = Vec::new();
    for (i, &l) in labels.iter().enumerate() {
        bytes.push(l);
        bytes.extend((0..PIXELS).map(|p| ((p + i) % 256) as u8));
    }
    bytes.extend(std::iter::repeat_n(7u8, extra));
    std::fs::write(dir.join(name), bytes).unwrap();
}

#[test]
fn malformed_files_are_errors_naming_file_and_offset() {
    let dir = common::temp_dir("malformed");
    write_records(&dir, "data_batch_1.bin", &[1, 2], 100);
    let e = load_train(&dir).unwrap_err().to_string();
    assert!(e.contains("data_batch_1.bin") && e.contains("offset 6146") && e.contains("truncated"), "{e}");

    write_records(&dir, "data_batch_1.bin", &[1, 12, 3], 0);
    let e = load_train(&dir).unwrap_err().to_string();
    assert!(e.contains("data_batch_1.bin") && e.contains("label 12") && e.contains("offset 3073"), "{e}");

    std::fs::write(dir.join("data_batch_1.bin"), b"").unwrap();
    let e = load_train(&dir).unwrap_err().to_string();
    assert!(e.contains("data_batch_1.bin") && e.contains("empty"), "{e}");

    // A subset of training files is fine; a missing test file is not.
    std::fs::remove_file(dir.join("data_batch_1.bin")).unwrap();
    write_records(&dir, "data_batch_3.bin", &[0, 9, 4], 0);
    assert_eq!(load_train(&dir).unwrap().labels, vec![0, 9, 4]);
    let e = load_test(&dir).unwrap_err().to_string();
    assert!(e.contains("test_batch.bin"), "{e}");

    let empty = common::temp_dir("no-train");
    let e = load_train(&empty).unwrap_err().to_string();
    assert!(e.contains("no CIFAR-10 training file"), "{e}");
    std::fs::remove_dir_all(dir).unwrap();
    std::fs::remove_dir_all(empty).unwrap();
}

#[test]
fn explicit_data_dir_errors_instead_of_falling_back() {
    let opts = DataOptions { dir: Some("/nonexistent/cifar".into()), ..DataOptions::default() };
    let e = load(&opts).err().expect("an error").to_string();
    assert!(e.starts_with("--data: /nonexistent/cifar"), "{e}");
    let opts = DataOptions { env_dir: Some("/nonexistent/env".into()), ..DataOptions::default() };
    assert!(load(&opts).err().expect("an error").to_string().starts_with("FROG_DATA: "));
}

#[test]
fn without_data_falls_back_to_the_labelled_synthetic_set() {
    let cache = common::temp_dir("cache");
    let opts = DataOptions { cache: Some(cache.clone()), download: false, seed: 3, test_limit: Some(500), ..DataOptions::default() };
    let data = load(&opts).unwrap();
    assert!(data.synthetic);
    assert!(data.source.contains("SYNTHETIC"));
    assert_eq!((data.train.len(), data.test.len()), (10_000, 500));
    assert!(data.train.labels.iter().all(|&l| l < 10));
    // The same seed gives the same set.
    assert_eq!(*data.train, synthetic::generate(3, 0, 10_000));
    std::fs::remove_dir_all(cache).unwrap();
}

#[test]
fn limits_above_the_set_keep_all_of_it() {
    // 2^54 images times 3072 bytes once wrapped to 0 bytes of pixels for every label.
    let opts = DataOptions { synthetic: true, train_limit: Some(1 << 54), test_limit: Some(usize::MAX), ..DataOptions::default() };
    let data = load(&opts).unwrap();
    assert_eq!((data.train.len(), data.test.len()), (10_000, 2_000));
    assert_eq!((data.train.pixels.len(), data.test.pixels.len()), (10_000 * PIXELS, 2_000 * PIXELS));
}

#[test]
fn loader_augments_reproducibly_and_normalizes() {
    let images = Arc::new(synthetic::generate(1, 0, 300));
    let pass = |epoch| train_batches(images.clone(), 64, 5, epoch).unwrap().collect::<Result<Vec<_>, _>>().unwrap();
    let (first, again, other) = (pass(0), pass(0), pass(1));
    assert_eq!(first.len(), 4, "drop_last keeps 4 full batches of 64 from 300");
    assert!(first.iter().zip(&again).all(|(a, b)| a.x == b.x && a.labels == b.labels));
    assert!(first[0].x != other[0].x);
    // Evaluation batches are the images in order, normalized, unaugmented.
    let eval: Vec<_> = eval_batches(images.clone(), 128).unwrap().collect::<Result<_, _>>().unwrap();
    assert_eq!(eval.iter().map(|b| b.len()).collect::<Vec<_>>(), vec![128, 128, 44]);
    let want = (f32::from(images.pixels[1024 + 5]) / 255.0 - MEAN[1] as f32) / STD[1] as f32;
    assert_abs_diff_eq!(eval[0].x[1024 + 5], want, epsilon = 1e-6);
    assert_eq!(eval[2].labels[..], images.labels[256..]);
}

#[test]
fn a_failing_loader_thread_is_an_error_of_the_pass() {
    // Fewer pixels than the labels say: the worker fails on the second image.
    let broken = Arc::new(Images { pixels: vec![0; PIXELS], labels: vec![1, 2, 3, 4] });
    let results: Vec<_> = eval_batches(broken, 1).unwrap().collect();
    assert_eq!(results.len(), 2, "one batch, then the error, then the end");
    assert!(results[0].is_ok());
    let e = results[1].as_ref().err().expect("the worker's failure").to_string();
    assert!(e.contains("batch loader thread failed after 1 of 4 batches") && e.contains("out of range"), "{e}");
}
