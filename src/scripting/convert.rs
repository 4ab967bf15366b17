//! Values between msgpack and JavaScript, both ways, for the sandbox. It owns the mapping and
//! its bounds (nesting depth, encoded size); it runs no code of its own, but reading a JS object
//! may run the script's getters, so callers convert while the call's CPU deadline is armed.
//!
//! The mapping:
//!
//! | msgpack | JavaScript |
//! |---|---|
//! | nil | `null` |
//! | bool | boolean |
//! | int | number (exact up to 2^53; larger integers lose precision as in JS) |
//! | float32/64 | number |
//! | str | string (invalid UTF-8 is replaced with U+FFFD) |
//! | bin | `Uint8Array` |
//! | array | array |
//! | map | plain object; string keys as they are, number and bool keys as their decimal or `true`/`false` text |
//! | ext | refused: the script gets nothing it cannot hand back unchanged |
//!
//! Back from JavaScript: `null` and `undefined` are nil (an `undefined` object property is left
//! out, as JSON does); a number that is a whole value within ±2^53 is an int, any other number
//! (fractions, `-0`, `NaN`, the infinities) a float64; a `Uint8Array` is bin; an array is an
//! array (holes are nil); any other object is a map of its own enumerable string-keyed
//! properties (so a `Map` or `Set` becomes `{}`, as with JSON). Functions, symbols and bigints
//! are refused, and so are values nested deeper than `NESTING_DEPTH_MAX` (a cycle ends there)
//! or larger, encoded, than the caller's byte budget.

use rmpv::Value as Msgpack;
use rquickjs::{Array, Ctx, Object, Type, TypedArray, Value};

use crate::limits::NESTING_DEPTH_MAX;

/// The largest integer a JS number holds exactly (`Number.MAX_SAFE_INTEGER`).
const SAFE_INTEGER_MAX: f64 = 9_007_199_254_740_991.0;
/// Bytes counted for an encoded value's header (type byte and length).
const HEADER_BYTES: usize = 9;

/// Why a value could not cross.
#[derive(Debug)]
pub(super) enum ConvertError {
    /// The value has a shape the other side cannot hold; the text says which.
    Unsupported(String),
    /// Running the script's code (a getter) failed; the exception is pending on the context.
    Js(rquickjs::Error),
}

impl From<rquickjs::Error> for ConvertError {
    fn from(error: rquickjs::Error) -> Self {
        ConvertError::Js(error)
    }
}

/// Decodes one msgpack value. The bytes come from a frame the decoder already scanned, or from
/// a stored record that came from one; a failure still becomes an error, never a panic.
pub(super) fn decode(bytes: &[u8]) -> Result<Msgpack, ConvertError> {
    rmpv::decode::read_value(&mut &bytes[..])
        .map_err(|error| ConvertError::Unsupported(format!("stored value is not msgpack: {error}")))
}

/// Encodes one msgpack value.
pub(super) fn encode(value: &Msgpack) -> Vec<u8> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, value).expect("writing msgpack into a Vec cannot fail");
    bytes
}

/// The JavaScript form of `value`.
pub(super) fn to_js<'js>(ctx: &Ctx<'js>, value: &Msgpack) -> Result<Value<'js>, ConvertError> {
    Ok(match value {
        Msgpack::Nil => Value::new_null(ctx.clone()),
        Msgpack::Boolean(flag) => Value::new_bool(ctx.clone(), *flag),
        Msgpack::Integer(integer) => match integer.as_i64().and_then(|small| i32::try_from(small).ok()) {
            Some(small) => Value::new_int(ctx.clone(), small),
            // Above 2^53 this rounds, as the client's own JS numbers do.
            None => Value::new_number(ctx.clone(), integer.as_f64().unwrap_or(f64::NAN)),
        },
        // `new_float`, not `new_number`: the latter turns whole floats into ints and loses `-0`.
        Msgpack::F32(number) => Value::new_float(ctx.clone(), f64::from(*number)),
        Msgpack::F64(number) => Value::new_float(ctx.clone(), *number),
        Msgpack::String(text) => {
            let text = match text.as_str() {
                Some(valid) => std::borrow::Cow::Borrowed(valid),
                None => String::from_utf8_lossy(text.as_bytes()),
            };
            rquickjs::String::from_str(ctx.clone(), &text)?.into_value()
        }
        Msgpack::Binary(bytes) => TypedArray::<u8>::new_copy(ctx.clone(), bytes)?.into_value(),
        Msgpack::Array(items) => {
            let array = Array::new(ctx.clone())?;
            for (index, item) in items.iter().enumerate() {
                array.set(index, to_js(ctx, item)?)?;
            }
            array.into_value()
        }
        Msgpack::Map(entries) => {
            let object = Object::new(ctx.clone())?;
            for (key, item) in entries {
                object.set(map_key(key)?, to_js(ctx, item)?)?;
            }
            object.into_value()
        }
        Msgpack::Ext(kind, _) => {
            return Err(ConvertError::Unsupported(format!(
                "msgpack extension type {kind} cannot be given to a script"
            )));
        }
    })
}

/// A msgpack map key as a JS property name.
fn map_key(key: &Msgpack) -> Result<String, ConvertError> {
    match key {
        Msgpack::String(text) => Ok(text
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| String::from_utf8_lossy(text.as_bytes()).into_owned())),
        Msgpack::Integer(integer) => Ok(integer.to_string()),
        Msgpack::Boolean(flag) => Ok(flag.to_string()),
        other => Err(ConvertError::Unsupported(format!(
            "a map key of type {} cannot be given to a script",
            kind_name(other)
        ))),
    }
}

fn kind_name(value: &Msgpack) -> &'static str {
    match value {
        Msgpack::Nil => "nil",
        Msgpack::Boolean(_) => "bool",
        Msgpack::Integer(_) => "int",
        Msgpack::F32(_) | Msgpack::F64(_) => "float",
        Msgpack::String(_) => "str",
        Msgpack::Binary(_) => "bin",
        Msgpack::Array(_) => "array",
        Msgpack::Map(_) => "map",
        Msgpack::Ext(..) => "ext",
    }
}

/// Converts a JS value back to msgpack, counting its encoded size against `budget_bytes`
/// (decremented; running out is an error, so a small JS heap cannot expand into a huge value by
/// repeating one large string). `what` names the value in error texts (`value`, `result`).
pub(super) fn from_js(value: &Value<'_>, what: &str, budget_bytes: &mut usize) -> Result<Msgpack, ConvertError> {
    from_js_at(value, what, budget_bytes, 0)
}

fn from_js_at(value: &Value<'_>, what: &str, budget_bytes: &mut usize, depth: usize) -> Result<Msgpack, ConvertError> {
    if depth > NESTING_DEPTH_MAX {
        return Err(ConvertError::Unsupported(format!(
            "{what} nests deeper than {NESTING_DEPTH_MAX} levels (or refers to itself)"
        )));
    }
    charge(budget_bytes, HEADER_BYTES, what)?;
    let converted = match value.type_of() {
        Type::Uninitialized | Type::Undefined | Type::Null => Msgpack::Nil,
        Type::Bool => Msgpack::Boolean(value.as_bool().unwrap_or(false)),
        Type::Int => Msgpack::from(value.as_int().unwrap_or(0)),
        Type::Float => number(value.as_float().unwrap_or(f64::NAN)),
        Type::String => {
            let text = value.get::<rquickjs::String>()?.to_string()?;
            charge(budget_bytes, text.len(), what)?;
            Msgpack::from(text)
        }
        Type::Array => {
            let array = value.as_array().expect("type_of said array");
            let mut items = Vec::with_capacity(array.len().min(1024));
            for index in 0..array.len() {
                let item: Value = array.get(index)?;
                items.push(from_js_at(&item, what, budget_bytes, depth + 1)?);
            }
            Msgpack::Array(items)
        }
        Type::Object | Type::Exception => {
            let object = value.as_object().expect("type_of said object");
            if let Ok(bytes) = TypedArray::<u8>::from_object(object.clone()) {
                let bytes = bytes.as_bytes().unwrap_or(&[]).to_vec();
                charge(budget_bytes, bytes.len(), what)?;
                Msgpack::Binary(bytes)
            } else {
                object_entries(object, what, budget_bytes, depth)?
            }
        }
        other => {
            return Err(ConvertError::Unsupported(format!(
                "{what} holds a {} and cannot be stored",
                type_label(other)
            )));
        }
    };
    Ok(converted)
}

/// A JS type as a script author would name it (rquickjs calls ordinary functions constructors).
pub(super) fn type_label(kind: Type) -> &'static str {
    match kind {
        Type::Function | Type::Constructor => "function",
        Type::BigInt => "bigint",
        Type::Int | Type::Float => "number",
        other => other.as_str(),
    }
}

/// A plain object's own enumerable string-keyed properties, `undefined` ones left out.
fn object_entries(
    object: &Object<'_>,
    what: &str,
    budget_bytes: &mut usize,
    depth: usize,
) -> Result<Msgpack, ConvertError> {
    let mut entries = Vec::new();
    for key in object.keys::<String>() {
        let key = key?;
        let item: Value = object.get(key.as_str())?;
        if item.is_undefined() {
            continue;
        }
        charge(budget_bytes, HEADER_BYTES + key.len(), what)?;
        let item = from_js_at(&item, what, budget_bytes, depth + 1)?;
        entries.push((Msgpack::from(key), item));
    }
    Ok(Msgpack::Map(entries))
}

/// A JS number as msgpack: whole values a JS number holds exactly are ints (so `1` round-trips as
/// `1`, not `1.0`); `-0` stays a float so its sign survives.
fn number(value: f64) -> Msgpack {
    let whole = value.is_finite() && value.fract() == 0.0 && value.abs() <= SAFE_INTEGER_MAX;
    if whole && !(value == 0.0 && value.is_sign_negative()) {
        Msgpack::from(value as i64)
    } else {
        Msgpack::F64(value)
    }
}

fn charge(budget_bytes: &mut usize, bytes: usize, what: &str) -> Result<(), ConvertError> {
    match budget_bytes.checked_sub(bytes) {
        Some(left) => {
            *budget_bytes = left;
            Ok(())
        }
        None => Err(ConvertError::Unsupported(format!("{what} is too large to store"))),
    }
}
