//! Compiles `protos/` with the pure-Rust `protox` (no system `protoc`) and generates tonic code.
//! `compile_fds` ignores `file_descriptor_set_path`, so the encoded set is written here by hand.

use std::{env, fs, path::PathBuf};

use prost::Message;

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

    let descriptors = protox::compile(ROOT_FILES, [&proto_dir])?;
    let out_dir = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(
        out_dir.join("shop_descriptor.bin"),
        descriptors.encode_to_vec(),
    )?;

    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_fds(descriptors)?;
    Ok(())
}
