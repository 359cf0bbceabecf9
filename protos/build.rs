//! Compiles `protos/` with the pure-Rust `protox` (no system `protoc`) and generates tonic code.
//! `compile_fds` ignores `file_descriptor_set_path`, so the encoded set is written here by hand.

use std::{env, fs, path::PathBuf};

const ROOT_FILES: &[&str] = &[
    "shop/common/v1/money.proto",
    "shop/user/v1/user.proto",
    "shop/product/v1/product.proto",
    "shop/order/v1/order.proto",
    "shop/payment/v1/payment.proto",
    "shop/events/v1/events.proto",
];

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let proto_dir = PathBuf::from(env::var("CARGO_MANIFEST_DIR")?);
    println!(
        "cargo:rerun-if-changed={}",
        proto_dir.join("shop").display()
    );
    println!(
        "cargo:rerun-if-changed={}",
        proto_dir.join("google").display()
    );

    let mut compiler = protox::Compiler::new([&proto_dir])?;
    compiler.include_imports(true).include_source_info(false);
    compiler.open_files(ROOT_FILES)?;
    // Encoded by protox itself: re-encoding prost_types' copy would drop the custom options
    // (google.api.http) that the gateway reads.
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("shop_descriptor.bin"),
        compiler.encode_file_descriptor_set(),
    )?;
    let descriptors = compiler.file_descriptor_set();

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
