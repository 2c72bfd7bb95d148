//! Reading the values a rule names out of a call's args, by field-id path, from the value tree
//! the schema-exact reader built (`schema::read`): one reading of the bytes, the metastore's.

use super::splice::EACH_ELEMENT as EACH;
use super::value::Value;

/// Every value at `path` in the args struct. `EACH` steps fan out over list elements; absent
/// fields yield nothing. The reader refuses repeated field ids, so a path names one value.
pub fn values_at<'a>(args: &'a Value, path: &[i16]) -> Vec<&'a Value> {
    let mut out = Vec::new();
    collect(args, path, &mut out);
    out
}

fn collect<'a>(v: &'a Value, path: &[i16], out: &mut Vec<&'a Value>) {
    let Some((&step, rest)) = path.split_first() else {
        out.push(v);
        return;
    };
    if step == EACH {
        for item in v.as_list() {
            collect(item, rest, out);
        }
    } else if let Some(f) = v.field(step) {
        collect(f, rest, out);
    }
}

/// The strings at `path` (non-string values are ignored).
pub fn strings_at(args: &Value, path: &[i16]) -> Vec<String> {
    values_at(args, path)
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_string))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_fan_out_over_lists() {
        let s = |x: &str| Value::Bytes(x.as_bytes().to_vec());
        let args = Value::Struct(vec![(
            1,
            Value::List(vec![
                Value::Struct(vec![(2, s("a"))]),
                Value::Struct(vec![(3, s("x"))]),
                Value::Struct(vec![(2, s("b"))]),
            ]),
        )]);
        assert_eq!(strings_at(&args, &[1, EACH, 2]), ["a", "b"]);
        assert!(strings_at(&args, &[2]).is_empty());
        assert!(strings_at(&args, &[1, 2]).is_empty());
    }
}
