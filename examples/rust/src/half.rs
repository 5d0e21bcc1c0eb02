//! IEEE half (f16) and bfloat16 storage types: the bit patterns libgqa reads, with conversions
//! to and from f32 (round to nearest, ties to even). Written here because the crate takes no
//! outside dependencies and Rust's own `f16` is not stable.

/// IEEE 754 binary16, stored as its bits.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct F16(pub u16);

/// bfloat16 (the top half of an f32), stored as its bits.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Bf16(pub u16);

/// `value >> shift`, rounded to nearest with ties to even (1 <= shift <= 31).
fn shift_round_even(value: u32, shift: u32) -> u32 {
    let kept = value >> shift;
    let rest = value & ((1u32 << shift) - 1);
    let half = 1u32 << (shift - 1);
    if rest > half || (rest == half && kept & 1 == 1) {
        kept + 1
    } else {
        kept
    }
}

impl F16 {
    pub fn from_f32(x: f32) -> F16 {
        let bits = x.to_bits();
        let sign = ((bits >> 16) & 0x8000) as u16;
        let exp = ((bits >> 23) & 0xff) as i32;
        let mantissa = bits & 0x7f_ffff;
        if exp == 0xff {
            let nan = if mantissa != 0 { 0x200 } else { 0 };
            return F16(sign | 0x7c00 | nan);
        }
        let e = exp - 127 + 15; // biased f16 exponent
        if e >= 0x1f {
            return F16(sign | 0x7c00);
        }
        if e <= 0 {
            // Subnormal f16 (or zero): value = m * 2^-24 with m = mantissa24 >> (14 - e).
            if e < -10 {
                return F16(sign);
            }
            let m = shift_round_even(mantissa | 0x80_0000, (14 - e) as u32);
            return F16(sign | m as u16);
        }
        // A carry out of the mantissa rolls into the exponent, up to infinity: still correct.
        let h = shift_round_even(((e as u32) << 23) | mantissa, 13);
        F16(sign | h as u16)
    }

    pub fn to_f32(self) -> f32 {
        let h = self.0 as u32;
        let sign = (h & 0x8000) << 16;
        let exp = (h >> 10) & 0x1f;
        let mantissa = h & 0x3ff;
        let magnitude = match exp {
            0 => {
                let value = mantissa as f32 * 2f32.powi(-24); // subnormal or zero
                return if sign != 0 { -value } else { value };
            }
            0x1f => 0x7f80_0000 | (mantissa << 13),
            _ => ((exp + 112) << 23) | (mantissa << 13),
        };
        f32::from_bits(sign | magnitude)
    }
}

impl Bf16 {
    pub fn from_f32(x: f32) -> Bf16 {
        let bits = x.to_bits();
        if x.is_nan() {
            return Bf16(((bits >> 16) as u16) | 0x40);
        }
        Bf16(shift_round_even(bits, 16) as u16)
    }

    pub fn to_f32(self) -> f32 {
        f32::from_bits((self.0 as u32) << 16)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_round_trips_known_values() {
        for (x, bits) in [(1.0f32, 0x3c00u16), (-2.0, 0xc000), (65504.0, 0x7bff), (6.1035156e-5, 0x0400),
                          (5.9604645e-8, 0x0001), (0.0, 0x0000), (0.33325195, 0x3555)] {
            assert_eq!(F16::from_f32(x).0, bits, "{x}");
            assert_eq!(F16(bits).to_f32(), x);
        }
        assert_eq!(F16::from_f32(1.0 + 1.0 / 2048.0).0, 0x3c00); // tie -> even
        assert_eq!(F16::from_f32(1.0 + 3.0 / 2048.0).0, 0x3c02); // tie -> even (up)
        assert_eq!(F16::from_f32(70000.0).0, 0x7c00);
        assert!(F16::from_f32(f32::NAN).to_f32().is_nan());
    }

    #[test]
    fn f16_is_within_half_an_ulp() {
        let mut x = -3.0f32;
        while x < 3.0 {
            let y = F16::from_f32(x).to_f32();
            assert!((x - y).abs() <= x.abs() * 2f32.powi(-11) + 2f32.powi(-25), "{x} -> {y}");
            x += 0.001234;
        }
    }

    #[test]
    fn bf16_rounds_to_nearest_even() {
        assert_eq!(Bf16::from_f32(1.0).0, 0x3f80);
        assert_eq!(Bf16::from_f32(f32::from_bits(0x3f80_8000)).0, 0x3f80); // tie -> even
        assert_eq!(Bf16::from_f32(f32::from_bits(0x3f81_8000)).0, 0x3f82); // tie -> even (up)
        assert_eq!(Bf16(0xc040).to_f32(), -3.0);
        assert!(Bf16::from_f32(f32::NAN).to_f32().is_nan());
    }
}
