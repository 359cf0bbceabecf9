//! The shop mesh's gRPC contracts: generated messages, clients and servers, and the encoded
//! `FileDescriptorSet` that reflection and the gateway read.

// Generated code is not ours to lint.
#![allow(unreachable_pub, clippy::all, clippy::pedantic, rust_2018_idioms)]

mod domain_event;

pub use domain_event::DomainEvent;

/// Every file under `protos/`, encoded, with source info and imports.
pub const FILE_DESCRIPTOR_SET: &[u8] =
    include_bytes!(concat!(env!("OUT_DIR"), "/shop_descriptor.bin"));

pub mod common {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/shop.common.v1.rs"));
    }
}

pub mod user {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/shop.user.v1.rs"));
    }
}

pub mod product {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/shop.product.v1.rs"));
    }
}

pub mod order {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/shop.order.v1.rs"));
    }
}

pub mod payment {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/shop.payment.v1.rs"));
    }
}

pub mod events {
    pub mod v1 {
        include!(concat!(env!("OUT_DIR"), "/shop.events.v1.rs"));
    }
}
