//! The typed words of cbrfs's files and command line — vault type,
//! compression, resource and member kind, backup origin, task type and
//! state, run status — each an enum whose words are written once, in a
//! table given to [`words!`].
//!
//! The macro writes what each enum repeated by hand: the list of values
//! (`ALL`), the word of each (`as_str`, also `Display`), the value of a word
//! (`from_name`) and the parse of a user's word with the error every such
//! parse gives (`parse`: `<what> "<word>" is invalid: it is one of a, b, c`,
//! or `it is a or b` for two, exit code 2). A declarative macro rather than
//! a derive crate (strum and the like): the table stays beside the enum's
//! docs, the error is cbrfs's own, and no crate is added for 40 lines.
//!
//! The serialized form is not the macro's: serde's and bincode's derives on
//! each enum keep writing the files as they always have (the golden stores
//! and tests/words.rs check that serde's word is the table's).

/// An enum of words: the enum, with its attributes and docs, as written,
/// each variant given its word (`Variant = "word"`, then any other words
/// `parse` takes for it: `| "alias"`), and, after the enum's name, what its
/// value is called in an error (`("vault type")`). The macro derives
/// `Clone, Copy, Debug, PartialEq, Eq`, which every such enum needs; the
/// serialized forms (serde, bincode) are the enum's own attributes.
///
/// ```
/// cbrfs::names::words! {
///     /// A fruit.
///     pub enum Fruit("fruit") {
///         /// Red.
///         Apple = "apple" | "pomme",
///         /// Yellow.
///         Banana = "banana",
///     }
/// }
/// assert_eq!(Fruit::parse("pomme").unwrap(), Fruit::Apple);
/// assert_eq!(Fruit::Banana.to_string(), "banana");
/// assert_eq!(Fruit::ALL, [Fruit::Apple, Fruit::Banana]);
/// let e = Fruit::parse("kiwi").unwrap_err().to_string();
/// assert!(e.ends_with("fruit \"kiwi\" is invalid: it is apple or banana"), "{e}");
/// ```
#[macro_export]
macro_rules! words {
    (
        $(#[$meta:meta])*
        $vis:vis enum $name:ident ($what:literal) {
            $(
                $(#[$vmeta:meta])*
                $variant:ident = $word:literal $(| $alias:literal)*
            ),+ $(,)?
        }
    ) => {
        $(#[$meta])*
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        $vis enum $name {
            $(
                $(#[$vmeta])*
                $variant,
            )+
        }

        impl $name {
            /// Every value, in the table's order (the order help and
            /// error messages list them in).
            pub const ALL: [$name; [$($word),+].len()] = [$($name::$variant),+];

            /// The word in files, output, JSON and arguments.
            pub fn as_str(self) -> &'static str {
                match self {
                    $($name::$variant => $word,)+
                }
            }

            /// The value a word names (also by the other words the table
            /// gives it); None for any other.
            pub fn from_name(s: &str) -> Option<$name> {
                match s {
                    $($word $(| $alias)* => Some($name::$variant),)+
                    _ => None,
                }
            }

            /// Parse a user's word; an unknown one is refused with the
            /// words there are (`BackupService.9900`, exit code 2).
            pub fn parse(s: &str) -> $crate::error::Result<$name> {
                $name::from_name(s).ok_or_else(|| {
                    $crate::error::Error::param(format!(
                        "{} {s:?} is invalid: it is {}",
                        $what,
                        $crate::names::choices(&[$($word),+])
                    ))
                })
            }
        }

        impl ::std::fmt::Display for $name {
            fn fmt(&self, f: &mut ::std::fmt::Formatter<'_>) -> ::std::fmt::Result {
                f.write_str(self.as_str())
            }
        }
    };
}

pub use crate::words;

/// The words a value may be, as an error lists them: `a or b`, or `one of
/// a, b, c`.
pub fn choices(words: &[&str]) -> String {
    match words {
        [a, b] => format!("{a} or {b}"),
        _ => format!("one of {}", words.join(", ")),
    }
}
