//! The JavaScript sandbox: runs one entry processor or conflict resolver call in an embedded
//! QuickJS (through `rquickjs`) under a CPU-time and a memory limit, with values crossing as
//! msgpack (`convert`). It knows nothing about maps, records, shards or the protocol; callers
//! hand it code and bytes and get back bytes or a `ScriptError`. Lives on every shard: one per
//! shard, used only by that shard's thread.
//!
//! One QuickJS runtime per shard, created on first use and kept; every call gets a fresh
//! context in it, so nothing a script does outlives its call. What a script can reach:
//! the ECMAScript built-ins (objects, arrays, strings, numbers, `Math`, `JSON`, `RegExp`,
//! `Map`/`Set`, typed arrays, promises, `BigInt`, `Proxy`, `eval`) and nothing else — no module
//! loader, no `std`/`os` modules, no timers, no console. Sources of non-determinism are left out
//! as well: there is no `Date` or `performance`, and `Math.random`, `WeakRef`,
//! `FinalizationRegistry`, `queueMicrotask`, `Atomics` and `SharedArrayBuffer` are removed, so a
//! call's outcome depends only on its inputs (the time a processor needs comes in its `args`).
//!
//! Limits, per call:
//! - CPU: the runtime's interrupt handler, which QuickJS polls while it interprets (every
//!   10 000 steps or so, and inside regular-expression matching), compares the monotonic clock
//!   with the call's deadline; past it the call ends with an uncatchable interrupt. The
//!   deadline stays armed while results are read back, since reading runs the script's getters.
//!   A single native built-in that runs long without calling back into JS (sorting a huge array
//!   without a comparator) can overrun by its own running time; the memory limit bounds how
//!   large such a job can be.
//! - Memory: the runtime's allocation limit; an allocation past it fails with an "out of
//!   memory" error inside the script. The limit covers the engine's own few hundred KiB too.
//! - Native stack: `SCRIPT_STACK_BYTES_MAX`; deep recursion is a RangeError.
//! - Results: their encoded size is bounded by the memory limit (`convert`).
//!
//! After a failed call the runtime is garbage-collected; if it still holds work queued by the
//! script (promise jobs) or memory a call should have released, it is dropped and the next call
//! builds a fresh one, so one bad script never leaves the shard's engine unusable.

use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

use rquickjs::context::intrinsic;
use rquickjs::{Context, Ctx, Function, Object, Runtime, Value};

use super::convert::{self, ConvertError};
use crate::limits::{SCRIPT_ERROR_BYTES_MAX, SCRIPT_RESET_BYTES, SCRIPT_STACK_BYTES_MAX};
use crate::model::{Timestamp, ValueBytes};

/// What one call may use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Running time, measured on the monotonic clock from the start of the call (the shard's
    /// thread does nothing else meanwhile, so this is at least the call's CPU time).
    pub cpu: Duration,
    /// Bytes the engine may hold during the call.
    pub memory_bytes: usize,
}

/// Why a call produced no outcome. `Display` is the reason sent to the client.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScriptError {
    /// The code does not compile; carries the engine's message (`SyntaxError: ...`).
    #[error("compile error: {0}")]
    Compile(String),
    /// The code threw; carries the thrown error as text (`Error: ...`).
    #[error("threw {0}")]
    Threw(String),
    #[error("exceeded the CPU time limit of {limit_ms} ms")]
    CpuLimit { limit_ms: u64 },
    #[error("exceeded the memory limit of {limit_mib} MiB")]
    MemoryLimit { limit_mib: usize },
    /// The code returned something that is not the expected result object.
    #[error("{0}")]
    BadReturn(String),
    /// A value could not cross between msgpack and JS (see `convert`).
    #[error("{0}")]
    BadValue(String),
    /// The engine could not be started (out of memory at start-up).
    #[error("script engine unavailable: {0}")]
    Engine(String),
}

/// What an entry processor asked for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ProcessorWrite {
    /// The returned object has no `value` property: leave the entry as it is.
    Keep,
    /// `value` is `undefined` or `null`: delete the entry.
    Delete,
    /// Store this value (msgpack).
    Put(ValueBytes),
}

/// A processor call's outcome.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ProcessorOutcome {
    pub write: ProcessorWrite,
    /// The returned `result` (msgpack), absent when it was `undefined`.
    pub result: Option<ValueBytes>,
}

/// What a conflict resolver decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Resolution {
    /// `{action: "accept"}`: apply the write as sent.
    Accept,
    /// `{action: "reject", reason}`: do not apply it.
    Reject { reason: String },
    /// `{action: "merge", value}`: store `value` instead (`None`: `null`/`undefined`, delete).
    Merge { value: Option<ValueBytes> },
    /// `{action: "local"}`: no opinion; the next resolver decides.
    Pass,
}

/// The conflict a resolver is asked about (its JS `context`).
#[derive(Clone, Copy, Debug)]
pub struct ResolverContext<'a> {
    pub map_name: &'a str,
    pub key: &'a str,
    /// The stored, live value (msgpack).
    pub local_value: &'a [u8],
    /// The written value (msgpack); `None` for a remove, which the script sees as `null`.
    pub remote_value: Option<&'a [u8]>,
    pub local_timestamp: &'a Timestamp,
    pub remote_timestamp: &'a Timestamp,
}

/// The built-ins every context gets; `Date` and `Performance` (clocks) are deliberately absent.
type Intrinsics = (
    intrinsic::Eval,
    intrinsic::RegExpCompiler,
    intrinsic::RegExp,
    intrinsic::Json,
    intrinsic::Proxy,
    intrinsic::MapSet,
    intrinsic::TypedArrays,
    intrinsic::Promise,
    intrinsic::BigInt,
    intrinsic::WeakRef,
);

/// Globals removed from every context: they depend on the garbage collector's timing, queue
/// work past the end of the call, or share memory between threads. (Their intrinsics stay
/// installed, since the engine's own code may refer to them.)
const REMOVED_GLOBALS: &[&str] = &["queueMicrotask", "WeakRef", "FinalizationRegistry", "Atomics", "SharedArrayBuffer"];

/// See the module doc.
#[derive(Default)]
pub struct Sandbox {
    /// Created on first use; dropped after a call that left it in a doubtful state.
    engine: Option<Engine>,
}

struct Engine {
    runtime: Runtime,
    /// When the current call must stop; `None` between calls.
    deadline: Rc<Cell<Option<Instant>>>,
    /// Set by the interrupt handler when it stopped a call.
    interrupted: Rc<Cell<bool>>,
}

impl Engine {
    fn start() -> Result<Engine, ScriptError> {
        let runtime = Runtime::new().map_err(|error| ScriptError::Engine(error.to_string()))?;
        runtime.set_max_stack_size(SCRIPT_STACK_BYTES_MAX);
        let deadline: Rc<Cell<Option<Instant>>> = Rc::new(Cell::new(None));
        let interrupted = Rc::new(Cell::new(false));
        let (handler_deadline, handler_interrupted) = (Rc::clone(&deadline), Rc::clone(&interrupted));
        runtime.set_interrupt_handler(Some(Box::new(move || match handler_deadline.get() {
            Some(deadline) if Instant::now() >= deadline => {
                handler_interrupted.set(true);
                true
            }
            _ => false,
        })));
        Ok(Engine { runtime, deadline, interrupted })
    }
}

/// How a call body stopped early.
enum Stop {
    /// An engine error; `Exception` means one is pending on the context.
    Js(rquickjs::Error),
    /// A refusal decided on our side.
    Refused(ScriptError),
}

impl From<rquickjs::Error> for Stop {
    fn from(error: rquickjs::Error) -> Self {
        Stop::Js(error)
    }
}

impl From<ConvertError> for Stop {
    fn from(error: ConvertError) -> Self {
        match error {
            ConvertError::Unsupported(text) => Stop::Refused(ScriptError::BadValue(text)),
            ConvertError::Js(error) => Stop::Js(error),
        }
    }
}

impl Sandbox {
    pub fn new() -> Sandbox {
        Sandbox::default()
    }

    /// Runs an entry processor: `code` is the body of `function(value, key, args)`, `value` is
    /// the entry's live value (absent: `undefined`), `args` the request's `args` (absent:
    /// `undefined`). It must return an object; its `value` property is the write (see
    /// `ProcessorWrite`) and its `result` property goes back to the client.
    pub fn run_processor(
        &mut self,
        code: &str,
        value: Option<&[u8]>,
        key: &str,
        args: Option<&[u8]>,
        limits: &Limits,
    ) -> Result<ProcessorOutcome, ScriptError> {
        self.call(limits, &["value", "key", "args"], code, |ctx, function| {
            let value = optional_to_js(ctx, value)?;
            let key = rquickjs::String::from_str(ctx.clone(), key)?;
            let args = optional_to_js(ctx, args)?;
            let returned: Value = function.call((value, key, args))?;
            let object = result_object(&returned, "processor must return an object such as {value, result}")?;
            let mut budget_bytes = limits.memory_bytes;
            let write = if object.contains_key("value")? {
                let value: Value = object.get("value")?;
                if value.is_undefined() || value.is_null() {
                    ProcessorWrite::Delete
                } else {
                    ProcessorWrite::Put(ValueBytes::from(convert::encode(&convert::from_js(
                        &value,
                        "value",
                        &mut budget_bytes,
                    )?)))
                }
            } else {
                ProcessorWrite::Keep
            };
            let result: Value = object.get("result")?;
            let result = if result.is_undefined() {
                None
            } else {
                Some(ValueBytes::from(convert::encode(&convert::from_js(&result, "result", &mut budget_bytes)?)))
            };
            Ok(ProcessorOutcome { write, result })
        })
    }

    /// Runs a conflict resolver: `code` is the body of `function(context)`; `context` carries
    /// `mapName`, `key`, `localValue`, `remoteValue`, `localTimestamp`, `remoteTimestamp` and
    /// `remoteNodeId`. It must return `{action}` with `accept`, `reject` (optional `reason`),
    /// `merge` (with `value`) or `local`.
    pub fn run_resolver(
        &mut self,
        code: &str,
        context: &ResolverContext<'_>,
        limits: &Limits,
    ) -> Result<Resolution, ScriptError> {
        self.call(limits, &["context"], code, |ctx, function| {
            let argument = Object::new(ctx.clone())?;
            argument.set("mapName", context.map_name)?;
            argument.set("key", context.key)?;
            argument.set("localValue", convert::to_js(ctx, &convert::decode(context.local_value)?)?)?;
            argument.set(
                "remoteValue",
                optional_to_js(ctx, context.remote_value)?.unwrap_or_else(|| Value::new_null(ctx.clone())),
            )?;
            argument.set("localTimestamp", timestamp_to_js(ctx, context.local_timestamp)?)?;
            argument.set("remoteTimestamp", timestamp_to_js(ctx, context.remote_timestamp)?)?;
            argument.set("remoteNodeId", context.remote_timestamp.node_id.as_str())?;
            let returned: Value = function.call((argument,))?;
            let object = result_object(&returned, "resolver must return an object such as {action: \"accept\"}")?;
            let action: Value = object.get("action")?;
            let action = match action.as_string() {
                Some(text) => text.to_string()?,
                None => {
                    return Err(Stop::Refused(ScriptError::BadReturn("resolver result has no string `action`".into())))
                }
            };
            match action.as_str() {
                "accept" => Ok(Resolution::Accept),
                "local" => Ok(Resolution::Pass),
                "reject" => {
                    let reason: Value = object.get("reason")?;
                    let reason = match reason.as_string() {
                        Some(text) => bounded(text.to_string()?),
                        None => "rejected by a conflict resolver".to_string(),
                    };
                    Ok(Resolution::Reject { reason })
                }
                "merge" => {
                    if !object.contains_key("value")? {
                        return Err(Stop::Refused(ScriptError::BadReturn(
                            "resolver action `merge` needs a `value`".into(),
                        )));
                    }
                    let value: Value = object.get("value")?;
                    if value.is_undefined() || value.is_null() {
                        return Ok(Resolution::Merge { value: None });
                    }
                    let mut budget_bytes = limits.memory_bytes;
                    let merged = convert::from_js(&value, "merged value", &mut budget_bytes)?;
                    Ok(Resolution::Merge { value: Some(ValueBytes::from(convert::encode(&merged))) })
                }
                other => Err(Stop::Refused(ScriptError::BadReturn(format!(
                    "unknown resolver action {:?} (expected accept, reject, merge or local)",
                    bounded(other.to_string())
                )))),
            }
        })
    }

    /// Compiles `code` as the body of a function of `params` without running it, so a resolver
    /// with a syntax error is refused when it is registered rather than skipped on every write.
    pub fn check_compiles(&mut self, params: &[&str], code: &str, limits: &Limits) -> Result<(), ScriptError> {
        self.call(limits, params, code, |_, _| Ok(()))
    }

    /// The shared frame of every call: arm the limits, build a fresh context, compile `code` as
    /// the body of a function of `params`, run `body` with it, turn failures into
    /// `ScriptError`s, disarm, and reset the engine if the call left it doubtful.
    fn call<T>(
        &mut self,
        limits: &Limits,
        params: &[&str],
        code: &str,
        body: impl for<'js> FnOnce(&Ctx<'js>, &Function<'js>) -> Result<T, Stop>,
    ) -> Result<T, ScriptError> {
        if self.engine.is_none() {
            self.engine = Some(Engine::start()?);
        }
        let engine = self.engine.as_ref().expect("started above");
        engine.runtime.set_memory_limit(limits.memory_bytes);
        engine.interrupted.set(false);
        engine.deadline.set(Some(Instant::now() + limits.cpu));
        let outcome = match Context::custom::<Intrinsics>(&engine.runtime) {
            Ok(context) => context.with(|ctx| {
                let outcome = run_in(&ctx, params, code, body, limits, &engine.interrupted);
                // Nothing may stay pending on the runtime for the next call's context.
                let _ = ctx.catch();
                outcome
            }),
            Err(_) => Err(ScriptError::MemoryLimit { limit_mib: limits.memory_bytes >> 20 }),
        };
        engine.deadline.set(None);
        let doubtful = match &outcome {
            Ok(_) => engine.runtime.is_job_pending(),
            Err(_) => {
                engine.runtime.run_gc();
                let held_bytes = usize::try_from(engine.runtime.memory_usage().malloc_size).unwrap_or(usize::MAX);
                engine.runtime.is_job_pending() || held_bytes > SCRIPT_RESET_BYTES
            }
        };
        if doubtful {
            self.engine = None;
        }
        outcome
    }
}

/// Prepares the context, compiles and runs; classifies whatever stops it.
fn run_in<'js, T>(
    ctx: &Ctx<'js>,
    params: &[&str],
    code: &str,
    body: impl FnOnce(&Ctx<'js>, &Function<'js>) -> Result<T, Stop>,
    limits: &Limits,
    interrupted: &Cell<bool>,
) -> Result<T, ScriptError> {
    let classify = |stop: Stop, compiling: bool| match stop {
        _ if interrupted.get() => ScriptError::CpuLimit { limit_ms: limits.cpu.as_millis() as u64 },
        Stop::Refused(error) => error,
        Stop::Js(rquickjs::Error::Exception) => {
            let exception = ctx.catch();
            // QuickJS leaves a null exception when it runs out of memory while building its own
            // "out of memory" error (the heap is full at that moment). A script that literally
            // throws null is reported the same way; its call fails either way, only the reason
            // differs.
            let out_of_memory_without_error = exception.is_null() && !compiling;
            let text = describe_exception(ctx, exception);
            if interrupted.get() {
                ScriptError::CpuLimit { limit_ms: limits.cpu.as_millis() as u64 }
            } else if text.contains("out of memory") || out_of_memory_without_error {
                ScriptError::MemoryLimit { limit_mib: limits.memory_bytes >> 20 }
            } else if compiling {
                ScriptError::Compile(text)
            } else {
                ScriptError::Threw(text)
            }
        }
        Stop::Js(rquickjs::Error::Allocation) => ScriptError::MemoryLimit { limit_mib: limits.memory_bytes >> 20 },
        Stop::Js(other) => ScriptError::BadValue(bounded(other.to_string())),
    };
    let function = prepare(ctx, params, code).map_err(|stop| classify(stop, true))?;
    body(ctx, &function).map_err(|stop| classify(stop, false))
}

/// Removes the globals the sandbox withholds and compiles `code` with the `Function`
/// constructor. QuickJS builds that function from the source text, so code that closes the
/// body early runs its remainder at compile time: still inside this call's context, under its
/// limits, which is all the sandbox promises.
fn prepare<'js>(ctx: &Ctx<'js>, params: &[&str], code: &str) -> Result<Function<'js>, Stop> {
    let globals = ctx.globals();
    for name in REMOVED_GLOBALS {
        globals.remove(*name)?;
    }
    let math: Object = globals.get("Math")?;
    math.remove("random")?;
    let constructor: Function = globals.get("Function")?;
    let mut args = rquickjs::function::Args::new(ctx.clone(), params.len() + 1);
    for param in params {
        args.push_arg(*param)?;
    }
    args.push_arg(code)?;
    let compiled: Function = constructor.call_arg(args)?;
    Ok(compiled)
}

fn optional_to_js<'js>(ctx: &Ctx<'js>, bytes: Option<&[u8]>) -> Result<Option<Value<'js>>, Stop> {
    match bytes {
        Some(bytes) => Ok(Some(convert::to_js(ctx, &convert::decode(bytes)?)?)),
        None => Ok(None),
    }
}

fn timestamp_to_js<'js>(ctx: &Ctx<'js>, timestamp: &Timestamp) -> Result<Object<'js>, Stop> {
    let object = Object::new(ctx.clone())?;
    // Millis fit a JS number exactly until the year 287 396.
    object.set("millis", timestamp.millis as f64)?;
    object.set("counter", timestamp.counter)?;
    object.set("nodeId", timestamp.node_id.as_str())?;
    Ok(object)
}

/// The returned value as an object, or the refusal `expected` (arrays, functions and
/// primitives are not result objects).
fn result_object<'js>(returned: &Value<'js>, expected: &str) -> Result<Object<'js>, Stop> {
    match returned.type_of() {
        rquickjs::Type::Object => Ok(returned.as_object().expect("type_of said object").clone()),
        other => Err(Stop::Refused(ScriptError::BadReturn(format!("{expected}, got {}", convert::type_label(other))))),
    }
}

/// A thrown value as text: `Name: message` for errors, the value itself for primitives. Reading
/// `name` and `message` may run the script's getters; the deadline still bounds them.
fn describe_exception<'js>(ctx: &Ctx<'js>, thrown: Value<'js>) -> String {
    let text = if thrown.is_error() {
        let object = thrown.as_object().expect("errors are objects");
        let name = object.get::<_, String>("name").unwrap_or_else(|_| "Error".into());
        let message = object.get::<_, String>("message").unwrap_or_default();
        // A failing getter leaves its own exception pending; it is not the one we describe.
        let _ = ctx.catch();
        if message.is_empty() {
            name
        } else {
            format!("{name}: {message}")
        }
    } else if let Some(text) = thrown.as_string() {
        text.to_string().unwrap_or_else(|_| "a string that is not valid Unicode".into())
    } else if let Some(number) = thrown.as_number() {
        number.to_string()
    } else if let Some(flag) = thrown.as_bool() {
        flag.to_string()
    } else {
        thrown.type_name().to_string()
    };
    bounded(text)
}

/// `text` cut to `SCRIPT_ERROR_BYTES_MAX` bytes (at a character boundary), so a script cannot
/// make the server send or log an arbitrarily large reason.
fn bounded(mut text: String) -> String {
    if text.len() > SCRIPT_ERROR_BYTES_MAX {
        let mut end = SCRIPT_ERROR_BYTES_MAX;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
        text.push('…');
    }
    text
}

#[cfg(test)]
mod tests;
