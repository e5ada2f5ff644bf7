//! BER-TLV for ISO 8583 field 55 (EMV chip data): tags, a zero-copy reader, a builder,
//! and a masked dump for the explain command. Plain std + thiserror so the codec stays
//! free of any runtime; field 55 carries card data and must never be logged.

use std::fmt;
use std::iter::FusedIterator;
use std::str::FromStr;

/// Deepest nesting of constructed tags that [`find`] and [`describe`] will enter.
/// Field 55 is at most two levels deep in practice; the bound keeps hostile input
/// from driving recursion.
pub const MAX_DEPTH: usize = 8;

/// Largest value a length field here can announce: three long-form length bytes.
pub const MAX_VALUE_LEN: usize = 0xFF_FFFF;

/// An EMV tag of one to three bytes, held as its big-endian bytes (`0x9F02`, `0x82`).
///
/// Always a well-formed BER tag: the field is private and every constructor checks
/// the continuation bits, so the builder can encode any `Tag` and the reader reads it
/// back unchanged. Tags starting with `00` or `FF` are impossible because EMV uses
/// those bytes as padding between objects.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Tag(u32);

/// Why a number or a hex string is not a usable tag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagError {
    #[error("tag {input:?}: expected 2, 4 or 6 hex digits, found {len} bytes")]
    WrongLength { input: String, len: usize },
    #[error("tag {input:?}: expected a hex digit at position {position}, found {found:?}")]
    NotHex {
        input: String,
        position: usize,
        found: char,
    },
    #[error("{raw:#X} is not a BER-TLV tag: {reason}")]
    Malformed { raw: u32, reason: &'static str },
}

impl Tag {
    /// Checks `raw` (the tag's bytes read big-endian, `0x9F02`) against the BER rules.
    pub fn new(raw: u32) -> Result<Tag, TagError> {
        let malformed = |reason| Err(TagError::Malformed { raw, reason });
        let [_, b0, b1, b2] = raw.to_be_bytes();
        if raw == 0 {
            return malformed("expected a non-zero tag");
        }
        if raw > 0xFF_FFFF {
            return malformed("expected at most 3 bytes");
        }
        let first = match (b0, b1) {
            (0, 0) => b2,
            (0, _) => b1,
            _ => b0,
        };
        if first == 0xFF {
            return malformed("expected a first byte other than FF, which is padding");
        }
        let multi_byte = raw > 0xFF;
        let announces_more = first & 0x1F == 0x1F;
        if !multi_byte && announces_more {
            return malformed("expected more bytes after a first byte whose low five bits are 1F");
        }
        if multi_byte && !announces_more {
            return malformed("expected low five bits 1F in the first byte of a multi-byte tag");
        }
        if raw > 0xFFFF && b1 & 0x80 == 0 {
            return malformed("expected the continuation bit (80) on the middle byte");
        }
        if multi_byte && b2 & 0x80 != 0 {
            return malformed("expected the last byte without the continuation bit (80)");
        }
        Ok(Tag(raw))
    }

    /// The tag's bytes read big-endian, e.g. `0x9F02`.
    pub const fn raw(self) -> u32 {
        self.0
    }

    /// Number of bytes the tag takes on the wire (1 to 3).
    pub const fn encoded_len(self) -> usize {
        if self.0 > 0xFFFF {
            3
        } else if self.0 > 0xFF {
            2
        } else {
            1
        }
    }

    /// Bit 6 of the first byte: the value is itself a sequence of TLV objects.
    pub const fn is_constructed(self) -> bool {
        let first = self.0 >> (8 * (self.encoded_len() - 1));
        first & 0x20 != 0
    }

    /// Tags whose values are cardholder data (PAN, tracks, name). [`describe`] masks
    /// them and `Debug` on [`Tlv`] leaves their values out.
    pub fn is_sensitive(self) -> bool {
        matches!(
            self,
            Tag::PAN
                | Tag::TRACK2_EQUIVALENT_DATA
                | Tag::TRACK1_DATA
                | Tag::TRACK2_DATA
                | Tag::TRACK1_DISCRETIONARY_DATA
                | Tag::TRACK2_DISCRETIONARY_DATA
                | Tag::CARDHOLDER_NAME
        )
    }

    fn write_to(self, out: &mut Vec<u8>) {
        let bytes = self.0.to_be_bytes();
        out.extend_from_slice(&bytes[4 - self.encoded_len()..]);
    }
}

impl TryFrom<u32> for Tag {
    type Error = TagError;

    fn try_from(raw: u32) -> Result<Tag, TagError> {
        Tag::new(raw)
    }
}

impl fmt::Display for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let width = 2 * self.encoded_len();
        write!(f, "{:0width$X}", self.0)
    }
}

impl fmt::Debug for Tag {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tag({self})")
    }
}

impl FromStr for Tag {
    type Err = TagError;

    /// Parses the hex form `Display` prints ("9F02"); lowercase is accepted.
    fn from_str(s: &str) -> Result<Tag, TagError> {
        if !matches!(s.len(), 2 | 4 | 6) {
            return Err(TagError::WrongLength {
                input: s.to_owned(),
                len: s.len(),
            });
        }
        let mut raw = 0u32;
        for (position, found) in s.char_indices() {
            let digit = found.to_digit(16).ok_or_else(|| TagError::NotHex {
                input: s.to_owned(),
                position,
                found,
            })?;
            raw = raw << 4 | digit;
        }
        Tag::new(raw)
    }
}

/// Declares the named tags once: each becomes a `Tag::CONST` and a `Tag::name` arm,
/// so the constants and the name table cannot drift apart.
macro_rules! emv_tags {
    ($($konst:ident = $raw:literal, $name:literal;)*) => {
        impl Tag {
            $(
                #[doc = concat!("`", stringify!($raw), "` ", $name, ".")]
                pub const $konst: Tag = Tag($raw);
            )*

            /// The EMV dictionary name of the common tags seen in field 55, `None` for others.
            pub fn name(&self) -> Option<&'static str> {
                match self.0 {
                    $($raw => Some($name),)*
                    _ => None,
                }
            }
        }

        #[cfg(test)]
        const NAMED_TAGS: &[Tag] = &[$(Tag::$konst),*];
    };
}

emv_tags! {
    IIN = 0x42, "Issuer Identification Number (IIN)";
    AID_CARD = 0x4F, "Application Identifier (AID) - card";
    APPLICATION_LABEL = 0x50, "Application Label";
    TRACK1_DATA = 0x56, "Track 1 Data";
    TRACK2_EQUIVALENT_DATA = 0x57, "Track 2 Equivalent Data";
    PAN = 0x5A, "Application Primary Account Number (PAN)";
    CARDHOLDER_NAME = 0x5F20, "Cardholder Name";
    APPLICATION_EXPIRATION_DATE = 0x5F24, "Application Expiration Date";
    APPLICATION_EFFECTIVE_DATE = 0x5F25, "Application Effective Date";
    ISSUER_COUNTRY_CODE = 0x5F28, "Issuer Country Code";
    TRANSACTION_CURRENCY_CODE = 0x5F2A, "Transaction Currency Code";
    LANGUAGE_PREFERENCE = 0x5F2D, "Language Preference";
    SERVICE_CODE = 0x5F30, "Service Code";
    PAN_SEQUENCE_NUMBER = 0x5F34, "Application PAN Sequence Number";
    TRANSACTION_CURRENCY_EXPONENT = 0x5F36, "Transaction Currency Exponent";
    FCI_TEMPLATE = 0x6F, "File Control Information (FCI) Template";
    READ_RECORD_TEMPLATE = 0x70, "READ RECORD Response Message Template";
    ISSUER_SCRIPT_TEMPLATE_1 = 0x71, "Issuer Script Template 1";
    ISSUER_SCRIPT_TEMPLATE_2 = 0x72, "Issuer Script Template 2";
    RESPONSE_TEMPLATE_FORMAT_2 = 0x77, "Response Message Template Format 2";
    RESPONSE_TEMPLATE_FORMAT_1 = 0x80, "Response Message Template Format 1";
    AIP = 0x82, "Application Interchange Profile";
    DF_NAME = 0x84, "Dedicated File (DF) Name";
    ISSUER_SCRIPT_COMMAND = 0x86, "Issuer Script Command";
    APPLICATION_PRIORITY_INDICATOR = 0x87, "Application Priority Indicator";
    AUTHORISATION_CODE = 0x89, "Authorisation Code";
    AUTHORISATION_RESPONSE_CODE = 0x8A, "Authorisation Response Code";
    CDOL1 = 0x8C, "Card Risk Management Data Object List 1 (CDOL1)";
    CDOL2 = 0x8D, "Card Risk Management Data Object List 2 (CDOL2)";
    CVM_LIST = 0x8E, "Cardholder Verification Method (CVM) List";
    ISSUER_AUTHENTICATION_DATA = 0x91, "Issuer Authentication Data";
    AFL = 0x94, "Application File Locator (AFL)";
    TVR = 0x95, "Terminal Verification Results";
    TRANSACTION_DATE = 0x9A, "Transaction Date";
    TSI = 0x9B, "Transaction Status Information";
    TRANSACTION_TYPE = 0x9C, "Transaction Type";
    ACQUIRER_IDENTIFIER = 0x9F01, "Acquirer Identifier";
    AMOUNT_AUTHORISED = 0x9F02, "Amount, Authorised (Numeric)";
    AMOUNT_OTHER = 0x9F03, "Amount, Other (Numeric)";
    AID_TERMINAL = 0x9F06, "Application Identifier (AID) - terminal";
    APPLICATION_USAGE_CONTROL = 0x9F07, "Application Usage Control";
    APPLICATION_VERSION_CARD = 0x9F08, "Application Version Number (card)";
    APPLICATION_VERSION_TERMINAL = 0x9F09, "Application Version Number (terminal)";
    IAC_DEFAULT = 0x9F0D, "Issuer Action Code - Default";
    IAC_DENIAL = 0x9F0E, "Issuer Action Code - Denial";
    IAC_ONLINE = 0x9F0F, "Issuer Action Code - Online";
    ISSUER_APPLICATION_DATA = 0x9F10, "Issuer Application Data";
    ISSUER_CODE_TABLE_INDEX = 0x9F11, "Issuer Code Table Index";
    APPLICATION_PREFERRED_NAME = 0x9F12, "Application Preferred Name";
    MERCHANT_CATEGORY_CODE = 0x9F15, "Merchant Category Code";
    MERCHANT_IDENTIFIER = 0x9F16, "Merchant Identifier";
    ISSUER_SCRIPT_IDENTIFIER = 0x9F18, "Issuer Script Identifier";
    TERMINAL_COUNTRY_CODE = 0x9F1A, "Terminal Country Code";
    TERMINAL_IDENTIFICATION = 0x9F1C, "Terminal Identification";
    IFD_SERIAL_NUMBER = 0x9F1E, "Interface Device (IFD) Serial Number";
    TRACK1_DISCRETIONARY_DATA = 0x9F1F, "Track 1 Discretionary Data";
    TRACK2_DISCRETIONARY_DATA = 0x9F20, "Track 2 Discretionary Data";
    TRANSACTION_TIME = 0x9F21, "Transaction Time";
    APPLICATION_CRYPTOGRAM = 0x9F26, "Application Cryptogram";
    CRYPTOGRAM_INFORMATION_DATA = 0x9F27, "Cryptogram Information Data";
    TERMINAL_CAPABILITIES = 0x9F33, "Terminal Capabilities";
    CVM_RESULTS = 0x9F34, "Cardholder Verification Method (CVM) Results";
    TERMINAL_TYPE = 0x9F35, "Terminal Type";
    ATC = 0x9F36, "Application Transaction Counter (ATC)";
    UNPREDICTABLE_NUMBER = 0x9F37, "Unpredictable Number";
    POS_ENTRY_MODE = 0x9F39, "Point-of-Service (POS) Entry Mode";
    ADDITIONAL_TERMINAL_CAPABILITIES = 0x9F40, "Additional Terminal Capabilities";
    TRANSACTION_SEQUENCE_COUNTER = 0x9F41, "Transaction Sequence Counter";
    APPLICATION_CURRENCY_CODE = 0x9F42, "Application Currency Code";
    MERCHANT_NAME_AND_LOCATION = 0x9F4E, "Merchant Name and Location";
    TRANSACTION_CATEGORY_CODE = 0x9F53, "Transaction Category Code";
    ISSUER_SCRIPT_RESULTS = 0x9F5B, "Issuer Script Results";
    TTQ = 0x9F66, "Terminal Transaction Qualifiers (TTQ)";
    TRACK2_DATA = 0x9F6B, "Track 2 Data";
    FORM_FACTOR_INDICATOR = 0x9F6E, "Form Factor Indicator / Third Party Data";
    CUSTOMER_EXCLUSIVE_DATA = 0x9F7C, "Customer Exclusive Data";
    FCI_PROPRIETARY_TEMPLATE = 0xA5, "FCI Proprietary Template";
    FCI_ISSUER_DISCRETIONARY_DATA = 0xBF0C, "FCI Issuer Discretionary Data";
}

/// What went wrong reading TLV bytes. Offsets count from the start of the outermost
/// input (field 55's value), also for errors inside constructed tags.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TlvError {
    #[error("truncated tag at byte {offset}: expected another tag byte after {partial:02X}, found end of data")]
    TruncatedTag { offset: usize, partial: u32 },
    #[error("tag at byte {offset} is longer than 3 bytes: expected the third byte to end the tag, found {partial:06X} with the continuation bit (80) still set")]
    TagTooLong { offset: usize, partial: u32 },
    #[error("truncated length of tag {tag} at byte {offset}: expected {expected} length byte(s), found {available}")]
    TruncatedLength {
        tag: Tag,
        offset: usize,
        expected: usize,
        available: usize,
    },
    #[error("unsupported length of tag {tag} at byte {offset}: expected 00-7F, 81, 82 or 83, found {byte:02X} (80 is indefinite length, 84 and above exceed 3 length bytes)")]
    UnsupportedLength { tag: Tag, offset: usize, byte: u8 },
    #[error("value of tag {tag} at byte {offset} overruns the data: expected {declared} byte(s), found {available}")]
    ValueOverrun {
        tag: Tag,
        offset: usize,
        declared: usize,
        available: usize,
    },
    #[error("constructed tag {tag} at byte {offset} nests too deep: expected at most {max} levels", max = MAX_DEPTH)]
    TooDeep { tag: Tag, offset: usize },
}

impl TlvError {
    /// The byte offset the error points at, for callers that add their own context.
    pub fn offset(&self) -> usize {
        match *self {
            TlvError::TruncatedTag { offset, .. }
            | TlvError::TagTooLong { offset, .. }
            | TlvError::TruncatedLength { offset, .. }
            | TlvError::UnsupportedLength { offset, .. }
            | TlvError::ValueOverrun { offset, .. }
            | TlvError::TooDeep { offset, .. } => offset,
        }
    }
}

/// One TLV object borrowed from the input.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Tlv<'a> {
    pub tag: Tag,
    pub value: &'a [u8],
    /// Offset of the tag's first byte within the outermost input.
    pub offset: usize,
    /// Offset of the value's first byte; needed because the length may be encoded
    /// in a longer form than necessary, so it cannot be recomputed from `value`.
    pub value_offset: usize,
}

impl<'a> Tlv<'a> {
    /// The objects inside a constructed tag, with offsets still relative to the
    /// outermost input. On a primitive tag this reads its value as TLV anyway.
    pub fn children(&self) -> TlvIter<'a> {
        TlvIter::at(self.value, self.value_offset)
    }
}

/// Leaves cardholder data out so a stray `{:?}` cannot leak a PAN or a track.
impl fmt::Debug for Tlv<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut d = f.debug_struct("Tlv");
        d.field("tag", &self.tag)
            .field("offset", &self.offset)
            .field("len", &self.value.len());
        if !self.tag.is_sensitive() {
            d.field("value", &format_args!("{}", hex_upper(self.value)));
        }
        d.finish()
    }
}

/// Iterator over the top-level objects of a TLV byte string. Skips `00`/`FF` padding
/// between objects and stops after yielding the first error.
#[derive(Debug, Clone)]
pub struct TlvIter<'a> {
    data: &'a [u8],
    pos: usize,
    /// Offset of `data[0]` within the outermost input, so nested errors point at
    /// the right byte.
    base: usize,
    done: bool,
}

impl<'a> TlvIter<'a> {
    fn at(data: &'a [u8], base: usize) -> Self {
        TlvIter {
            data,
            pos: 0,
            base,
            done: false,
        }
    }
}

impl<'a> Iterator for TlvIter<'a> {
    type Item = Result<Tlv<'a>, TlvError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.done {
            return None;
        }
        let padding = self.data[self.pos..]
            .iter()
            .take_while(|&&b| b == 0x00 || b == 0xFF)
            .count();
        self.pos += padding;
        if self.pos >= self.data.len() {
            self.done = true;
            return None;
        }
        match read_object(self.data, self.pos, self.base) {
            Ok((tlv, next)) => {
                self.pos = next;
                Some(Ok(tlv))
            }
            Err(e) => {
                self.done = true;
                Some(Err(e))
            }
        }
    }
}

impl FusedIterator for TlvIter<'_> {}

/// Iterates the top-level objects of `data` without descending into constructed tags.
pub fn iter(data: &[u8]) -> TlvIter<'_> {
    TlvIter::at(data, 0)
}

/// All top-level objects of `data`, or the first error.
pub fn parse(data: &[u8]) -> Result<Vec<Tlv<'_>>, TlvError> {
    iter(data).collect()
}

/// The value of the first object tagged `tag`, searching depth-first into constructed
/// tags (at most [`MAX_DEPTH`] levels). A matching constructed tag returns its whole
/// value. Bytes after the match are not examined; errors met before it are returned.
pub fn find(data: &[u8], tag: Tag) -> Result<Option<&[u8]>, TlvError> {
    find_in(data, 0, tag, 1)
}

fn find_in(data: &[u8], base: usize, tag: Tag, depth: usize) -> Result<Option<&[u8]>, TlvError> {
    for item in TlvIter::at(data, base) {
        let item = item?;
        if item.tag == tag {
            return Ok(Some(item.value));
        }
        if item.tag.is_constructed() {
            if depth >= MAX_DEPTH {
                return Err(TlvError::TooDeep {
                    tag: item.tag,
                    offset: item.offset,
                });
            }
            if let Some(value) = find_in(item.value, item.value_offset, tag, depth + 1)? {
                return Ok(Some(value));
            }
        }
    }
    Ok(None)
}

/// One row per object, depth-first: `(tag hex, EMV name, value hex)`, for the explain
/// command. A constructed object's row has an empty value and its children follow it.
///
/// Field 55 must never be logged: it holds cryptograms and card data. Values of
/// [`Tag::is_sensitive`] tags are masked here (PAN and track 2 keep the first six and
/// last four PAN digits only; names and other tracks are all `*`), but the output is
/// still meant for an operator's terminal, not for log lines.
pub fn describe(data: &[u8]) -> Result<Vec<DescribedRow>, TlvError> {
    let mut rows = Vec::new();
    describe_into(data, 0, 1, &mut rows)?;
    Ok(rows)
}

/// A [`describe`] row: `(tag hex, EMV name, masked value hex)`.
pub type DescribedRow = (String, Option<&'static str>, String);

fn describe_into(
    data: &[u8],
    base: usize,
    depth: usize,
    rows: &mut Vec<DescribedRow>,
) -> Result<(), TlvError> {
    for item in TlvIter::at(data, base) {
        let item = item?;
        if item.tag.is_constructed() {
            if depth >= MAX_DEPTH {
                return Err(TlvError::TooDeep {
                    tag: item.tag,
                    offset: item.offset,
                });
            }
            rows.push((item.tag.to_string(), item.tag.name(), String::new()));
            describe_into(item.value, item.value_offset, depth + 1, rows)?;
        } else {
            let value = masked_value_hex(item.tag, item.value);
            rows.push((item.tag.to_string(), item.tag.name(), value));
        }
    }
    Ok(())
}

/// Hex of `value`, with cardholder data masked the way receipts do it.
fn masked_value_hex(tag: Tag, value: &[u8]) -> String {
    let hex = hex_upper(value);
    match tag {
        Tag::PAN => mask_pan_digits(&hex),
        Tag::TRACK2_EQUIVALENT_DATA | Tag::TRACK2_DATA => match hex.find('D') {
            // Everything after the separator (expiry, service code, discretionary
            // data with the dynamic CVV) is hidden.
            Some(separator) => {
                let mut masked = mask_pan_digits(&hex[..separator]);
                masked.push('D');
                masked.push_str(&"*".repeat(hex.len() - separator - 1));
                masked
            }
            None => "*".repeat(hex.len()),
        },
        _ if tag.is_sensitive() => "*".repeat(hex.len()),
        _ => hex,
    }
}

/// A BCD PAN masked as every PAN is ([`mask_pan`]), its trailing `F` padding kept.
///
/// [`mask_pan`]: super::fields::mask_pan
fn mask_pan_digits(hex: &str) -> String {
    let digits = hex.trim_end_matches('F');
    let padding = hex.len() - digits.len();
    let mut masked = super::fields::mask_pan(digits);
    masked.push_str(&"F".repeat(padding));
    masked
}

fn hex_upper(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    let mut out = String::with_capacity(2 * bytes.len());
    for &b in bytes {
        out.push(char::from(DIGITS[usize::from(b >> 4)]));
        out.push(char::from(DIGITS[usize::from(b & 0x0F)]));
    }
    out
}

/// Reads one object starting at `start` (which is not padding) and returns it with the
/// position just after it. `base` turns positions into offsets in the outermost input.
fn read_object(data: &[u8], start: usize, base: usize) -> Result<(Tlv<'_>, usize), TlvError> {
    let (tag, tag_len) = read_tag(data, start, base)?;
    let length_at = start + tag_len;
    let (declared, length_len) = read_length(data, length_at, tag, base)?;
    let value_at = length_at + length_len;
    let available = data.len() - value_at;
    if declared > available {
        return Err(TlvError::ValueOverrun {
            tag,
            offset: base + value_at,
            declared,
            available,
        });
    }
    let end = value_at + declared;
    let tlv = Tlv {
        tag,
        value: &data[value_at..end],
        offset: base + start,
        value_offset: base + value_at,
    };
    Ok((tlv, end))
}

fn read_tag(data: &[u8], start: usize, base: usize) -> Result<(Tag, usize), TlvError> {
    let first = data[start];
    if first & 0x1F != 0x1F {
        return Ok((Tag(u32::from(first)), 1));
    }
    let mut partial = u32::from(first);
    for len in 2..=3 {
        let Some(&b) = data.get(start + len - 1) else {
            return Err(TlvError::TruncatedTag {
                offset: base + start,
                partial,
            });
        };
        partial = partial << 8 | u32::from(b);
        if b & 0x80 == 0 {
            return Ok((Tag(partial), len));
        }
    }
    Err(TlvError::TagTooLong {
        offset: base + start,
        partial,
    })
}

fn read_length(data: &[u8], at: usize, tag: Tag, base: usize) -> Result<(usize, usize), TlvError> {
    let Some(&first) = data.get(at) else {
        return Err(TlvError::TruncatedLength {
            tag,
            offset: base + at,
            expected: 1,
            available: 0,
        });
    };
    match first {
        0x00..=0x7F => Ok((usize::from(first), 1)),
        0x81..=0x83 => {
            let count = usize::from(first & 0x7F);
            let Some(bytes) = data.get(at + 1..at + 1 + count) else {
                return Err(TlvError::TruncatedLength {
                    tag,
                    offset: base + at,
                    expected: 1 + count,
                    available: data.len() - at,
                });
            };
            let len = bytes.iter().fold(0usize, |n, &b| n << 8 | usize::from(b));
            Ok((len, 1 + count))
        }
        _ => Err(TlvError::UnsupportedLength {
            tag,
            offset: base + at,
            byte: first,
        }),
    }
}

/// Why a builder could not produce its bytes.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BuildError {
    #[error("value of tag {tag} is {len} bytes: expected at most {max} (3 length bytes)", max = MAX_VALUE_LEN)]
    ValueTooLong { tag: Tag, len: usize },
    #[error("tag {tag} was pushed as constructed: expected the constructed bit (20) in its first byte, found it clear")]
    NotConstructed { tag: Tag },
}

/// Writes TLV objects with the shortest length form.
///
/// `push` keeps the chaining style by not returning errors itself: the first problem
/// (a value over [`MAX_VALUE_LEN`] bytes, a primitive tag given to `push_constructed`)
/// is remembered, later pushes are ignored, and [`TlvBuilder::finish`] returns it.
#[derive(Debug, Clone, Default)]
pub struct TlvBuilder {
    out: Vec<u8>,
    error: Option<BuildError>,
}

impl TlvBuilder {
    pub fn new() -> Self {
        TlvBuilder::default()
    }

    /// Appends a primitive object (or a constructed one whose value is already encoded).
    pub fn push(&mut self, tag: Tag, value: &[u8]) -> &mut Self {
        if self.error.is_some() {
            return self;
        }
        if value.len() > MAX_VALUE_LEN {
            self.error = Some(BuildError::ValueTooLong {
                tag,
                len: value.len(),
            });
            return self;
        }
        tag.write_to(&mut self.out);
        write_length(&mut self.out, value.len());
        self.out.extend_from_slice(value);
        self
    }

    /// Appends a constructed object whose children `build` pushes.
    pub fn push_constructed(&mut self, tag: Tag, build: impl FnOnce(&mut TlvBuilder)) -> &mut Self {
        if self.error.is_some() {
            return self;
        }
        if !tag.is_constructed() {
            self.error = Some(BuildError::NotConstructed { tag });
            return self;
        }
        let mut inner = TlvBuilder::new();
        build(&mut inner);
        match inner.finish() {
            Ok(value) => self.push(tag, &value),
            Err(e) => {
                self.error = Some(e);
                self
            }
        }
    }

    pub fn finish(self) -> Result<Vec<u8>, BuildError> {
        match self.error {
            Some(e) => Err(e),
            None => Ok(self.out),
        }
    }
}

/// Callers have checked `len <= MAX_VALUE_LEN`.
fn write_length(out: &mut Vec<u8>, len: usize) {
    let bytes = (len as u32).to_be_bytes();
    match len {
        0..=0x7F => out.push(bytes[3]),
        0x80..=0xFF => out.extend_from_slice(&[0x81, bytes[3]]),
        0x100..=0xFFFF => out.extend_from_slice(&[0x82, bytes[2], bytes[3]]),
        _ => out.extend_from_slice(&[0x83, bytes[1], bytes[2], bytes[3]]),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use proptest::test_runner::RngSeed;

    fn unhex(s: &str) -> Vec<u8> {
        let s: String = s.chars().filter(|c| !c.is_whitespace()).collect();
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("test hex is valid"))
            .collect()
    }

    fn tag(s: &str) -> Tag {
        s.parse().expect("test tag is valid")
    }

    /// A Mastercard-style ARQC as a terminal sends it in field 55 of an 0100/0200.
    const ARQC_HEX: &str = "
        9F26 08 1122334455667788
        9F27 01 80
        9F10 12 0110A50003220000000000000000000000FF
        9F37 04 9BADBCAB
        9F36 02 0001
        95 05 0000008000
        9A 03 240315
        9C 01 00
        9F02 06 000000001234
        5F2A 02 0978
        82 02 1980
        9F1A 02 0276
        9F03 06 000000000000
        9F33 03 E0F8C8
        9F34 03 1F0302
        9F35 01 22
        84 07 A0000000041010";

    fn build_arqc() -> Vec<u8> {
        let mut b = TlvBuilder::new();
        b.push(Tag::APPLICATION_CRYPTOGRAM, &unhex("1122334455667788"))
            .push(Tag::CRYPTOGRAM_INFORMATION_DATA, &[0x80])
            .push(
                Tag::ISSUER_APPLICATION_DATA,
                &unhex("0110A50003220000000000000000000000FF"),
            )
            .push(Tag::UNPREDICTABLE_NUMBER, &unhex("9BADBCAB"))
            .push(Tag::ATC, &[0x00, 0x01])
            .push(Tag::TVR, &unhex("0000008000"))
            .push(Tag::TRANSACTION_DATE, &unhex("240315"))
            .push(Tag::TRANSACTION_TYPE, &[0x00])
            .push(Tag::AMOUNT_AUTHORISED, &unhex("000000001234"))
            .push(Tag::TRANSACTION_CURRENCY_CODE, &unhex("0978"))
            .push(Tag::AIP, &unhex("1980"))
            .push(Tag::TERMINAL_COUNTRY_CODE, &unhex("0276"))
            .push(Tag::AMOUNT_OTHER, &unhex("000000000000"))
            .push(Tag::TERMINAL_CAPABILITIES, &unhex("E0F8C8"))
            .push(Tag::CVM_RESULTS, &unhex("1F0302"))
            .push(Tag::TERMINAL_TYPE, &[0x22])
            .push(Tag::DF_NAME, &unhex("A0000000041010"));
        b.finish().expect("arqc values are short")
    }

    #[test]
    fn builder_produces_the_golden_arqc_bytes() {
        assert_eq!(build_arqc(), unhex(ARQC_HEX));
    }

    #[test]
    fn golden_arqc_parses_into_its_seventeen_tags_in_order() {
        let data = unhex(ARQC_HEX);
        let items = parse(&data).expect("golden arqc parses");
        let tags: Vec<String> = items.iter().map(|t| t.tag.to_string()).collect();
        assert_eq!(
            tags,
            [
                "9F26", "9F27", "9F10", "9F37", "9F36", "95", "9A", "9C", "9F02", "5F2A", "82",
                "9F1A", "9F03", "9F33", "9F34", "9F35", "84"
            ]
        );
        assert_eq!(items[0].offset, 0);
        assert_eq!(items[0].value_offset, 3);
        assert_eq!(items[1].offset, 11);
        assert_eq!(
            items[2].value,
            &unhex("0110A50003220000000000000000000000FF")[..]
        );
        let last = items.last().expect("seventeen items");
        assert_eq!(last.value_offset + last.value.len(), data.len());
    }

    #[test]
    fn find_returns_the_amount_from_the_golden_arqc() {
        let data = unhex(ARQC_HEX);
        assert_eq!(
            find(&data, Tag::AMOUNT_AUTHORISED),
            Ok(Some(&unhex("000000001234")[..]))
        );
        assert_eq!(find(&data, Tag::PAN), Ok(None));
    }

    #[test]
    fn describe_names_every_tag_of_the_golden_arqc() {
        let data = unhex(ARQC_HEX);
        let rows = describe(&data).expect("golden arqc describes");
        assert_eq!(rows.len(), 17);
        assert!(rows.iter().all(|(_, name, _)| name.is_some()));
        assert_eq!(
            rows[8],
            (
                "9F02".to_owned(),
                Some("Amount, Authorised (Numeric)"),
                "000000001234".to_owned()
            )
        );
    }

    #[test]
    fn describe_masks_the_pan_and_track_2() {
        let mut b = TlvBuilder::new();
        b.push(Tag::PAN, &unhex("4761739001010119"))
            .push(
                Tag::TRACK2_EQUIVALENT_DATA,
                &unhex("4761739001010119D22122011143804400000F"),
            )
            .push(Tag::CARDHOLDER_NAME, b"DOE/JOHN");
        let data = b.finish().expect("short values");
        let rows = describe(&data).expect("valid tlv");
        assert_eq!(rows[0].2, "476173******0119");
        assert_eq!(rows[1].2, "476173******0119D*********************");
        assert_eq!(rows[2].2, "*".repeat(16));
        let debug = format!("{:?}", parse(&data).expect("valid tlv"));
        assert!(!debug.contains("4761739001010119"), "{debug}");
    }

    #[test]
    fn describe_masks_a_short_pan_entirely_and_keeps_its_padding() {
        assert_eq!(
            masked_value_hex(Tag::PAN, &unhex("123456789012")),
            "************"
        );
        assert_eq!(
            masked_value_hex(Tag::PAN, &unhex("476173900101011912 3F")),
            "476173*********9123F"
        );
    }

    #[test]
    fn describe_lists_children_after_their_constructed_parent() {
        let mut b = TlvBuilder::new();
        b.push(
            Tag::ISSUER_AUTHENTICATION_DATA,
            &unhex("0102030405060708 3030"),
        )
        .push_constructed(Tag::ISSUER_SCRIPT_TEMPLATE_2, |s| {
            s.push(Tag::ISSUER_SCRIPT_IDENTIFIER, &unhex("00000001"))
                .push(
                    Tag::ISSUER_SCRIPT_COMMAND,
                    &unhex("8418000008AABBCCDDEEFF0011"),
                );
        });
        let data = b.finish().expect("short values");
        let rows = describe(&data).expect("valid tlv");
        let tags: Vec<&str> = rows.iter().map(|r| r.0.as_str()).collect();
        assert_eq!(tags, ["91", "72", "9F18", "86"]);
        assert_eq!(rows[1].2, "");
        assert_eq!(rows[2].2, "00000001");
    }

    #[test]
    fn long_form_lengths_are_chosen_minimally_and_read_back() {
        for (len, header) in [
            (0x7F, "01 7F"),
            (0x80, "01 81 80"),
            (0xFF, "01 81 FF"),
            (0x100, "01 82 0100"),
            (0xFFFF, "01 82 FFFF"),
            (0x1_0000, "01 83 010000"),
        ] {
            let value = vec![0xAB; len];
            let mut b = TlvBuilder::new();
            b.push(tag("01"), &value);
            let data = b.finish().expect("within limit");
            let header = unhex(header);
            assert_eq!(&data[..header.len()], &header[..], "len {len:#X}");
            let items = parse(&data).expect("reads back");
            assert_eq!(items.len(), 1);
            assert_eq!(items[0].value.len(), len);
            assert_eq!(items[0].value_offset, header.len());
        }
    }

    #[test]
    fn non_minimal_long_form_lengths_are_accepted() {
        let data = unhex("9F02 83 000006 000000001234 9C 81 01 00");
        let items = parse(&data).expect("non-minimal lengths are legal BER");
        assert_eq!(items[0].value, &unhex("000000001234")[..]);
        assert_eq!(items[0].value_offset, 6);
        assert_eq!(items[1].offset, 12);
        assert_eq!(items[1].value, &[0x00][..]);
    }

    #[test]
    fn padding_bytes_between_objects_are_skipped() {
        let data = unhex("00 FF 9C 01 00 00 00 FF 9F36 02 0001 FF 00");
        let items = parse(&data).expect("padding is allowed");
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].offset, 2);
        assert_eq!(items[1].offset, 8);
        assert_eq!(items[1].tag, Tag::ATC);
    }

    #[test]
    fn only_padding_parses_as_empty() {
        assert_eq!(parse(&unhex("00 FF 00")), Ok(vec![]));
        assert_eq!(parse(&[]), Ok(vec![]));
    }

    #[test]
    fn find_searches_inside_nested_constructed_tags() {
        let mut b = TlvBuilder::new();
        b.push(Tag::TRANSACTION_TYPE, &[0x00])
            .push_constructed(Tag::FCI_TEMPLATE, |fci| {
                fci.push(Tag::DF_NAME, &unhex("A0000000041010"))
                    .push_constructed(Tag::FCI_PROPRIETARY_TEMPLATE, |a5| {
                        a5.push(Tag::APPLICATION_LABEL, b"MASTERCARD")
                            .push_constructed(Tag::FCI_ISSUER_DISCRETIONARY_DATA, |bf| {
                                bf.push(tag("9F4D"), &[0x0B, 0x0A]);
                            });
                    });
            });
        let data = b.finish().expect("short values");
        assert_eq!(find(&data, tag("9F4D")), Ok(Some(&[0x0B, 0x0A][..])));
        assert_eq!(
            find(&data, Tag::APPLICATION_LABEL),
            Ok(Some(&b"MASTERCARD"[..]))
        );
        let top = parse(&data).expect("valid tlv");
        assert_eq!(top.len(), 2, "parse stays at the top level");
        let children: Vec<Tlv<'_>> = top[1]
            .children()
            .collect::<Result<_, _>>()
            .expect("valid children");
        assert_eq!(children[0].tag, Tag::DF_NAME);
        assert_eq!(children[0].offset, top[1].value_offset);
        assert_eq!(&data[children[0].value_offset..][..7], children[0].value);
    }

    #[test]
    fn find_returns_a_matching_constructed_tag_whole() {
        let data = unhex("71 07 9F18 04 00000001");
        assert_eq!(
            find(&data, Tag::ISSUER_SCRIPT_TEMPLATE_1),
            Ok(Some(&unhex("9F18 04 00000001")[..]))
        );
    }

    #[test]
    fn errors_inside_constructed_tags_carry_absolute_offsets() {
        // 70 at 0 holds 9F02 claiming 6 bytes with only 2 present; its value starts at 5.
        let data = unhex("70 05 9F02 06 0000");
        assert_eq!(
            find(&data, Tag::PAN),
            Err(TlvError::ValueOverrun {
                tag: Tag::AMOUNT_AUTHORISED,
                offset: 5,
                declared: 6,
                available: 2
            })
        );
    }

    fn nested(levels: usize) -> Vec<u8> {
        let mut data = unhex("9F02 01 00");
        for _ in 0..levels {
            let mut b = TlvBuilder::new();
            b.push(Tag::READ_RECORD_TEMPLATE, &data);
            data = b.finish().expect("well under the length limit");
        }
        data
    }

    #[test]
    fn find_enters_up_to_max_depth_levels() {
        let data = nested(MAX_DEPTH - 1);
        assert_eq!(find(&data, Tag::AMOUNT_AUTHORISED), Ok(Some(&[0x00][..])));
        assert!(describe(&data).is_ok());
    }

    #[test]
    fn nesting_beyond_max_depth_is_too_deep() {
        let data = nested(MAX_DEPTH);
        let expected = TlvError::TooDeep {
            tag: Tag::READ_RECORD_TEMPLATE,
            offset: 2 * (MAX_DEPTH - 1),
        };
        assert_eq!(find(&data, Tag::AMOUNT_AUTHORISED), Err(expected.clone()));
        assert_eq!(describe(&data), Err(expected));
    }

    #[test]
    fn thousands_of_nested_levels_error_instead_of_overflowing_the_stack() {
        let data = nested(2_000);
        assert!(matches!(
            find(&data, Tag::PAN),
            Err(TlvError::TooDeep { .. })
        ));
        assert!(matches!(describe(&data), Err(TlvError::TooDeep { .. })));
    }

    #[test]
    fn truncated_tag_reports_where_the_tag_starts() {
        let err = parse(&unhex("9C 01 00 9F")).expect_err("tag cut short");
        assert_eq!(
            err,
            TlvError::TruncatedTag {
                offset: 3,
                partial: 0x9F
            }
        );
        assert_eq!(
            err.to_string(),
            "truncated tag at byte 3: expected another tag byte after 9F, found end of data"
        );
        assert_eq!(
            parse(&unhex("DF 81")),
            Err(TlvError::TruncatedTag {
                offset: 0,
                partial: 0xDF81
            })
        );
    }

    #[test]
    fn four_byte_tags_are_refused() {
        let err = parse(&unhex("DF 81 82 03 01 00")).expect_err("tag too long");
        assert_eq!(
            err,
            TlvError::TagTooLong {
                offset: 0,
                partial: 0xDF8182
            }
        );
        assert!(err.to_string().contains("DF8182"), "{err}");
    }

    #[test]
    fn missing_length_is_a_truncated_length() {
        let err = parse(&unhex("9F02")).expect_err("no length");
        assert_eq!(
            err,
            TlvError::TruncatedLength {
                tag: Tag::AMOUNT_AUTHORISED,
                offset: 2,
                expected: 1,
                available: 0
            }
        );
        assert_eq!(
            err.to_string(),
            "truncated length of tag 9F02 at byte 2: expected 1 length byte(s), found 0"
        );
    }

    #[test]
    fn cut_long_form_length_is_a_truncated_length() {
        assert_eq!(
            parse(&unhex("9F10 82 01")),
            Err(TlvError::TruncatedLength {
                tag: Tag::ISSUER_APPLICATION_DATA,
                offset: 2,
                expected: 3,
                available: 2
            })
        );
    }

    #[test]
    fn indefinite_and_four_byte_lengths_are_unsupported() {
        for byte in [0x80, 0x84, 0xFF] {
            let data = [0x9F, 0x10, byte, 0, 0, 0, 1, 0];
            assert_eq!(
                parse(&data),
                Err(TlvError::UnsupportedLength {
                    tag: Tag::ISSUER_APPLICATION_DATA,
                    offset: 2,
                    byte
                })
            );
        }
        let err = parse(&[0x95, 0x80]).expect_err("indefinite");
        assert!(err.to_string().contains("found 80"), "{err}");
        assert!(err.to_string().contains("tag 95"), "{err}");
    }

    #[test]
    fn value_longer_than_the_data_is_an_overrun() {
        let err = parse(&unhex("95 05 000000")).expect_err("overrun");
        assert_eq!(
            err,
            TlvError::ValueOverrun {
                tag: Tag::TVR,
                offset: 2,
                declared: 5,
                available: 3
            }
        );
        assert_eq!(
            err.to_string(),
            "value of tag 95 at byte 2 overruns the data: expected 5 byte(s), found 3"
        );
        assert_eq!(err.offset(), 2);
    }

    #[test]
    fn too_deep_message_names_tag_offset_and_limit() {
        let err = TlvError::TooDeep {
            tag: Tag::READ_RECORD_TEMPLATE,
            offset: 14,
        };
        assert_eq!(
            err.to_string(),
            "constructed tag 70 at byte 14 nests too deep: expected at most 8 levels"
        );
    }

    #[test]
    fn iterator_yields_good_objects_then_stops_after_the_first_error() {
        let data = unhex("9C 01 00 95 09 00 9C 01 00");
        let mut it = iter(&data);
        assert!(matches!(it.next(), Some(Ok(t)) if t.tag == Tag::TRANSACTION_TYPE));
        assert!(matches!(
            it.next(),
            Some(Err(TlvError::ValueOverrun { .. }))
        ));
        assert!(it.next().is_none());
        assert!(it.next().is_none());
    }

    #[test]
    fn tags_display_as_uppercase_hex_of_their_bytes() {
        assert_eq!(Tag::AMOUNT_AUTHORISED.to_string(), "9F02");
        assert_eq!(Tag::AIP.to_string(), "82");
        assert_eq!(Tag::FCI_ISSUER_DISCRETIONARY_DATA.to_string(), "BF0C");
        assert_eq!(tag("df8101").to_string(), "DF8101");
        assert_eq!(format!("{:?}", Tag::TVR), "Tag(95)");
    }

    #[test]
    fn tags_know_whether_they_are_constructed() {
        assert!(Tag::READ_RECORD_TEMPLATE.is_constructed());
        assert!(Tag::ISSUER_SCRIPT_TEMPLATE_1.is_constructed());
        assert!(Tag::FCI_ISSUER_DISCRETIONARY_DATA.is_constructed());
        assert!(tag("7F8101").is_constructed());
        assert!(!Tag::AMOUNT_AUTHORISED.is_constructed());
        assert!(!Tag::TRANSACTION_CURRENCY_CODE.is_constructed());
        assert!(!Tag::DF_NAME.is_constructed());
    }

    #[test]
    fn tag_names_cover_the_common_field_55_tags() {
        assert_eq!(
            Tag::AMOUNT_AUTHORISED.name(),
            Some("Amount, Authorised (Numeric)")
        );
        assert_eq!(tag("9F26").name(), Some("Application Cryptogram"));
        assert_eq!(tag("5F34").name(), Some("Application PAN Sequence Number"));
        assert_eq!(tag("9F4D").name(), None);
        assert!(NAMED_TAGS.len() >= 40);
    }

    #[test]
    fn every_named_tag_constant_is_a_valid_tag() {
        for &t in NAMED_TAGS {
            assert_eq!(Tag::new(t.raw()), Ok(t));
            assert_eq!(t.to_string().parse::<Tag>(), Ok(t));
        }
    }

    #[test]
    fn malformed_tag_numbers_are_refused() {
        for raw in [
            0x00,
            0x1F,
            0xFF,
            0x9F,
            0x0102,
            0x9F81,
            0xFF01,
            0x9F0102,
            0x9F8180,
            0x0100_0000,
        ] {
            assert!(
                matches!(Tag::new(raw), Err(TagError::Malformed { .. })),
                "{raw:#X}"
            );
        }
    }

    #[test]
    fn tag_strings_must_be_two_four_or_six_hex_digits() {
        assert_eq!(
            "9F0".parse::<Tag>(),
            Err(TagError::WrongLength {
                input: "9F0".into(),
                len: 3
            })
        );
        assert_eq!(
            "9G02".parse::<Tag>(),
            Err(TagError::NotHex {
                input: "9G02".into(),
                position: 1,
                found: 'G'
            })
        );
        assert_eq!("9f02".parse::<Tag>(), Ok(Tag::AMOUNT_AUTHORISED));
        assert!("é9".parse::<Tag>().is_err());
    }

    #[test]
    fn push_constructed_refuses_a_primitive_tag() {
        let mut b = TlvBuilder::new();
        b.push_constructed(Tag::AMOUNT_AUTHORISED, |_| {})
            .push(Tag::TVR, &[0; 5]);
        assert_eq!(
            b.finish(),
            Err(BuildError::NotConstructed {
                tag: Tag::AMOUNT_AUTHORISED
            })
        );
    }

    #[test]
    fn values_over_three_length_bytes_are_a_build_error() {
        let huge = vec![0u8; MAX_VALUE_LEN + 1];
        let mut b = TlvBuilder::new();
        b.push_constructed(Tag::READ_RECORD_TEMPLATE, |r| {
            r.push(Tag::ISSUER_SCRIPT_COMMAND, &huge);
        });
        assert_eq!(
            b.finish(),
            Err(BuildError::ValueTooLong {
                tag: Tag::ISSUER_SCRIPT_COMMAND,
                len: MAX_VALUE_LEN + 1
            })
        );
    }

    fn any_tag() -> impl Strategy<Value = Tag> {
        let one = any::<u8>()
            .prop_filter("not multi-byte or padding", |b| *b != 0 && b & 0x1F != 0x1F)
            .prop_map(u32::from);
        let first = any::<u8>()
            .prop_map(|b| b | 0x1F)
            .prop_filter("FF is padding", |b| *b != 0xFF)
            .prop_map(u32::from);
        let two = (first.clone(), any::<u8>()).prop_map(|(a, b)| a << 8 | u32::from(b & 0x7F));
        let three = (first, any::<u8>(), any::<u8>())
            .prop_map(|(a, b, c)| a << 16 | u32::from(b | 0x80) << 8 | u32::from(c & 0x7F));
        prop_oneof![one, two, three]
            .prop_map(|raw| Tag::new(raw).expect("strategy builds valid tags"))
    }

    /// Bytes drawn mostly from tag, length and padding values, so random input reaches
    /// deep nesting and every length form far more often than uniform bytes would.
    fn tlv_like_bytes() -> impl Strategy<Value = Vec<u8>> {
        let interesting = prop::sample::select(vec![
            0x00, 0x01, 0x02, 0x05, 0x7F, 0x80, 0x81, 0x82, 0x83, 0x84, 0xFF, 0x70, 0x71, 0x9F,
            0xDF, 0xBF, 0x0C, 0x5A, 0x57,
        ]);
        prop::collection::vec(prop_oneof![interesting, any::<u8>()], 0..256)
    }

    proptest! {
        #![proptest_config(ProptestConfig {
            cases: 512,
            rng_seed: RngSeed::Fixed(0x0055_8583),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn builder_output_parses_back_to_the_same_tags_and_values(
            items in prop::collection::vec((any_tag(), prop::collection::vec(any::<u8>(), 0..300)), 0..12)
        ) {
            let mut b = TlvBuilder::new();
            for (t, v) in &items {
                b.push(*t, v);
            }
            let data = b.finish().expect("values are short");
            let parsed = parse(&data).expect("builder output parses");
            let got: Vec<(Tag, Vec<u8>)> = parsed.iter().map(|t| (t.tag, t.value.to_vec())).collect();
            prop_assert_eq!(got, items);
        }

        #[test]
        fn tag_display_and_from_str_round_trip(t in any_tag()) {
            prop_assert_eq!(t.to_string().parse::<Tag>(), Ok(t));
            prop_assert_eq!(t.to_string().len(), 2 * t.encoded_len());
        }

        #[test]
        fn random_bytes_never_panic_parse_find_or_describe(data in prop::collection::vec(any::<u8>(), 0..512)) {
            let _ = parse(&data);
            let _ = find(&data, Tag::AMOUNT_AUTHORISED);
            let _ = describe(&data);
        }

        #[test]
        fn tlv_like_bytes_never_panic_and_offsets_point_into_the_input(data in tlv_like_bytes()) {
            let _ = find(&data, Tag::PAN);
            let _ = describe(&data);
            match parse(&data) {
                Ok(items) => {
                    for item in items {
                        let mut tag_bytes = Vec::new();
                        item.tag.write_to(&mut tag_bytes);
                        prop_assert!(data[item.offset..].starts_with(&tag_bytes));
                        prop_assert_eq!(&data[item.value_offset..][..item.value.len()], item.value);
                    }
                }
                Err(e) => prop_assert!(e.offset() <= data.len()),
            }
        }

        #[test]
        fn random_tag_strings_never_panic(s in "\\PC{0,8}") {
            let _ = s.parse::<Tag>();
        }
    }
}
