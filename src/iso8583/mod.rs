//! The ISO 8583 codec: message specs as data, decode and encode driven by a spec,
//! composite fields' subfields decoded on demand, typed accessors for the fields
//! the switch reads, EMV field 55 as BER-TLV, and
//! spec import from jPOS and moov-io. Nothing here depends on tokio.

pub mod bitmap;
mod codec;
pub mod composite;
mod composite_spec;
pub mod emv;
pub mod encoding;
pub mod error;
pub mod explain;
pub mod fields;
pub mod import;
pub mod json;
pub mod message;
pub mod original_data;
pub mod response_code;
pub mod spec;

pub use bitmap::Bitmap;
pub use composite::{Composite, SubEntry, SubValue};
pub use error::{CodecError, ErrorKind, Part};
pub use fields::{FieldError, MinorUnits, Pan, Stan};
pub use message::{Message, Mti};
pub use original_data::{OriginalData, OriginalDataError};
pub use response_code::ResponseCode;
pub use spec::{Field, Spec, SpecError};
