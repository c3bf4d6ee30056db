//! The statistics of the comparison: medians over rounds, ratios against a
//! reference allocator, geometric means of ratios.

pub use crate::report::median;

/// The median of `values` as `f64`, or `None` for no values.
pub fn median_of<T: Copy + Into<f64>>(values: &[T]) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    let floats: Vec<f64> = values.iter().map(|&v| v.into()).collect();
    Some(median(&floats))
}

/// `value / reference`, or `None` when either is missing or the reference
/// is not a positive number.
pub fn ratio(value: Option<f64>, reference: Option<f64>) -> Option<f64> {
    match (value, reference) {
        (Some(v), Some(r)) if r > 0.0 && r.is_finite() && v.is_finite() => Some(v / r),
        _ => None,
    }
}

/// The geometric mean of positive ratios, or `None` for none. Non-positive
/// or non-finite values are left out, since they are no ratio of two
/// measurements.
pub fn geometric_mean(ratios: &[f64]) -> Option<f64> {
    let logs: Vec<f64> = ratios
        .iter()
        .filter(|r| r.is_finite() && **r > 0.0)
        .map(|r| r.ln())
        .collect();
    if logs.is_empty() {
        None
    } else {
        Some((logs.iter().sum::<f64>() / logs.len() as f64).exp())
    }
}

/// A ratio as `1.23`, or `-` when missing.
pub fn format_ratio(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "-".to_string(), |r| format!("{r:.2}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_integers_and_nothing() {
        assert_eq!(median_of(&[30u32, 10, 20]), Some(20.0));
        assert_eq!(median_of(&[4u32, 1, 3, 2]), Some(2.5));
        assert_eq!(median_of::<u32>(&[]), None);
    }

    #[test]
    fn ratio_needs_both_sides_and_a_positive_reference() {
        assert_eq!(ratio(Some(3.0), Some(2.0)), Some(1.5));
        assert_eq!(ratio(None, Some(2.0)), None);
        assert_eq!(ratio(Some(3.0), None), None);
        assert_eq!(ratio(Some(3.0), Some(0.0)), None);
        assert_eq!(ratio(Some(3.0), Some(-1.0)), None);
        assert_eq!(ratio(Some(f64::NAN), Some(1.0)), None);
    }

    #[test]
    fn geometric_mean_of_ratios() {
        let mean = geometric_mean(&[2.0, 0.5]).expect("two ratios");
        assert!((mean - 1.0).abs() < 1e-12, "{mean}");
        let mean = geometric_mean(&[1.0, 4.0]).expect("two ratios");
        assert!((mean - 2.0).abs() < 1e-12, "{mean}");
        assert_eq!(geometric_mean(&[]), None);
        assert_eq!(geometric_mean(&[0.0, f64::NAN]), None);
        let only = geometric_mean(&[0.0, 3.0]).expect("one ratio");
        assert!((only - 3.0).abs() < 1e-12, "{only}");
    }

    #[test]
    fn ratios_print_with_two_decimals() {
        assert_eq!(format_ratio(Some(1.234)), "1.23");
        assert_eq!(format_ratio(None), "-");
    }
}
