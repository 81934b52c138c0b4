mod parity;
mod registry;
