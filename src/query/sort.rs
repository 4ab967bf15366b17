//! shardgrid::query::sort: the `sort` clause in both wire forms (the client's array of
//! `{field, direction}` and the schema's map `{field: "asc"|"desc"}`, DECISIONS.md §1.6) and the
//! row order of PROTOCOL.md §6.9: each sort field in turn, then the key ascending by bytes. It
//! leaves limits and cursors to the parent module; how single values rank is in `value`.

use std::cmp::Ordering;

use rmpv::Value;

use crate::query::value::{compare_for_sort, field, lookup};
use crate::query::{QueryError, ATTRIBUTE_BYTES_MAX, SORT_FIELDS_MAX};

/// Which way one sort field runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SortDirection {
    Asc,
    Desc,
}

impl SortDirection {
    pub fn as_str(self) -> &'static str {
        match self {
            SortDirection::Asc => "asc",
            SortDirection::Desc => "desc",
        }
    }

    /// Turns an ascending comparison into this direction's.
    fn apply(self, ascending: Ordering) -> Ordering {
        match self {
            SortDirection::Asc => ascending,
            SortDirection::Desc => ascending.reverse(),
        }
    }
}

/// One sort key: an attribute (dot path, looked up as predicates do) and its direction.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct SortField {
    pub field: String,
    pub direction: SortDirection,
}

/// Parses the `sort` value found at `query.sort`. An empty array or map means no sort.
pub(crate) fn parse(sort: &Value) -> Result<Vec<SortField>, QueryError> {
    const LOCATION: &str = "query.sort";
    let fields: Vec<SortField> = match sort {
        Value::Array(items) => {
            check_count(items.len())?;
            items
                .iter()
                .enumerate()
                .map(|(index, item)| parse_array_item(item, &format!("{LOCATION}[{index}]")))
                .collect::<Result<_, _>>()?
        }
        Value::Map(entries) => {
            check_count(entries.len())?;
            entries
                .iter()
                .map(|(name, direction)| {
                    let field = parse_field_name(name, LOCATION)?;
                    let direction = parse_direction(direction, &format!("{LOCATION}.{field}"))?;
                    Ok(SortField { field, direction })
                })
                .collect::<Result<_, _>>()?
        }
        other => return Err(QueryError::wrong_type(LOCATION, "an array or a map", other)),
    };
    Ok(fields)
}

fn check_count(count: usize) -> Result<(), QueryError> {
    if count > SORT_FIELDS_MAX {
        return Err(QueryError::TooMany {
            field: "query.sort".to_owned(),
            what: "fields",
            count,
            max: SORT_FIELDS_MAX,
        });
    }
    Ok(())
}

fn parse_array_item(item: &Value, location: &str) -> Result<SortField, QueryError> {
    let Value::Map(entries) = item else {
        return Err(QueryError::wrong_type(location, "a map {field, direction}", item));
    };
    let Some(name) = field(entries, "field") else {
        return Err(QueryError::Missing { field: format!("{location}.field") });
    };
    let field_name = parse_field_name(name, &format!("{location}.field"))?;
    // The client always sends a direction; a missing one reads as ascending, the usual default.
    let direction = match field(entries, "direction") {
        None => SortDirection::Asc,
        Some(direction) => parse_direction(direction, &format!("{location}.direction"))?,
    };
    Ok(SortField { field: field_name, direction })
}

fn parse_field_name(name: &Value, location: &str) -> Result<String, QueryError> {
    let Some(text) = name.as_str() else {
        return Err(QueryError::wrong_type(location, "a field name string", name));
    };
    if text.len() > ATTRIBUTE_BYTES_MAX {
        return Err(QueryError::TooLong {
            field: location.to_owned(),
            bytes: text.len(),
            bytes_max: ATTRIBUTE_BYTES_MAX,
        });
    }
    Ok(text.to_owned())
}

/// `"asc"` or `"desc"`, in any ASCII case since nothing is lost by being lenient here.
fn parse_direction(direction: &Value, location: &str) -> Result<SortDirection, QueryError> {
    match direction.as_str() {
        Some(text) if text.eq_ignore_ascii_case("asc") => Ok(SortDirection::Asc),
        Some(text) if text.eq_ignore_ascii_case("desc") => Ok(SortDirection::Desc),
        _ => Err(QueryError::wrong_type(location, "\"asc\" or \"desc\"", direction)),
    }
}

/// The §6.9 order of two rows (key, value): each sort field in turn (missing and nil greatest,
/// see `compare_for_sort`), then the key ascending by bytes whatever the directions. Keys are
/// unique, so two distinct rows never compare equal.
pub(crate) fn compare_rows(sort: &[SortField], a: (&str, &Value), b: (&str, &Value)) -> Ordering {
    for sort_field in sort {
        let ascending = compare_for_sort(lookup(a.1, &sort_field.field), lookup(b.1, &sort_field.field));
        let ordering = sort_field.direction.apply(ascending);
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    a.0.as_bytes().cmp(b.0.as_bytes())
}

/// The order of a row against a position given by stand-in sort values (one per sort field)
/// and a key, as a cursor stores it.
pub(crate) fn compare_row_to_position(
    sort: &[SortField],
    row: (&str, &Value),
    position_values: &[Value],
    position_key: &str,
) -> Ordering {
    assert_eq!(sort.len(), position_values.len(), "a cursor carries one value per sort field");
    for (sort_field, position_value) in sort.iter().zip(position_values) {
        let ascending = compare_for_sort(lookup(row.1, &sort_field.field), Some(position_value));
        let ordering = sort_field.direction.apply(ascending);
        if ordering != Ordering::Equal {
            return ordering;
        }
    }
    row.0.as_bytes().cmp(position_key.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::query::test_support::map;

    fn sort_item(field: &str, direction: &str) -> Value {
        map(&[("field", Value::from(field)), ("direction", Value::from(direction))])
    }

    /// Goal: both wire forms parse to the same ordered fields. Method: parse each form.
    #[test]
    fn array_and_map_forms_agree() {
        let array_form = Value::Array(vec![sort_item("age", "desc"), sort_item("name", "asc")]);
        let map_form = map(&[("age", Value::from("desc")), ("name", Value::from("ASC"))]);
        let expected = vec![
            SortField { field: "age".into(), direction: SortDirection::Desc },
            SortField { field: "name".into(), direction: SortDirection::Asc },
        ];
        assert_eq!(parse(&array_form).unwrap(), expected);
        assert_eq!(parse(&map_form).unwrap(), expected);
        assert_eq!(parse(&Value::Array(vec![])).unwrap(), vec![]);
        let no_direction = Value::Array(vec![map(&[("field", Value::from("x"))])]);
        assert_eq!(parse(&no_direction).unwrap()[0].direction, SortDirection::Asc);
    }

    /// Goal: every malformed sort is refused with a message naming the spot. Method: parse bad
    /// shapes and check the message.
    #[test]
    fn malformed_sorts_are_refused() {
        let cases: Vec<(Value, &str)> = vec![
            (Value::from("age"), "query.sort must be an array or a map"),
            (Value::Array(vec![Value::from("age")]), "query.sort[0] must be a map"),
            (Value::Array(vec![map(&[("direction", Value::from("asc"))])]), "query.sort[0].field is required"),
            (Value::Array(vec![sort_item("age", "up")]), "query.sort[0].direction must be \"asc\" or \"desc\""),
            (Value::Array(vec![map(&[("field", Value::from(3))])]), "query.sort[0].field must be"),
            (map(&[("age", Value::from(1))]), "query.sort.age must be \"asc\" or \"desc\""),
            (Value::Array(vec![sort_item("a", "asc"); SORT_FIELDS_MAX + 1]), "query.sort has 17 fields"),
        ];
        for (sort, message) in cases {
            let error = parse(&sort).unwrap_err().to_string();
            assert!(error.contains(message), "{error:?} should contain {message:?}");
            assert!(error.starts_with("malformed message: "), "{error:?}");
        }
    }

    /// Goal: missing and nil sort last ascending and first descending, mixed types rank by class,
    /// ties fall to the key ascending in both directions. Method: sort a small set each way.
    #[test]
    fn rows_sort_by_fields_then_key() {
        let rows = vec![
            ("e".to_owned(), map(&[("n", Value::Nil)])),
            ("d".to_owned(), map(&[])),
            ("c".to_owned(), map(&[("n", Value::from(2))])),
            ("b".to_owned(), map(&[("n", Value::F64(1.0))])),
            ("a".to_owned(), map(&[("n", Value::from(1))])),
            ("f".to_owned(), map(&[("n", Value::from("x"))])),
            ("g".to_owned(), Value::from("not a map")),
        ];
        let order = |direction: SortDirection| {
            let sort = vec![SortField { field: "n".into(), direction }];
            let mut sorted = rows.clone();
            sorted.sort_by(|a, b| compare_rows(&sort, (&a.0, &a.1), (&b.0, &b.1)));
            sorted.into_iter().map(|(key, _)| key).collect::<String>()
        };
        assert_eq!(order(SortDirection::Asc), "abcfdeg");
        assert_eq!(order(SortDirection::Desc), "degfcab");
        let mut by_key = rows.clone();
        by_key.sort_by(|a, b| compare_rows(&[], (&a.0, &a.1), (&b.0, &b.1)));
        assert_eq!(by_key.into_iter().map(|(key, _)| key).collect::<String>(), "abcdefg");
    }
}
