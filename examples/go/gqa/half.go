package gqa

import "math"

// F16 is an IEEE 754 binary16 value stored as its bits, the layout libgqa reads.
type F16 uint16

// BF16 is a bfloat16 value (the top half of a float32) stored as its bits.
type BF16 uint16

// shiftRoundEven returns value >> shift rounded to nearest, ties to even (1 <= shift <= 31).
func shiftRoundEven(value uint32, shift uint) uint32 {
	kept := value >> shift
	rest := value & (1<<shift - 1)
	half := uint32(1) << (shift - 1)
	if rest > half || (rest == half && kept&1 == 1) {
		kept++
	}
	return kept
}

// F16FromFloat32 rounds x to the nearest binary16 (ties to even).
func F16FromFloat32(x float32) F16 {
	bits := math.Float32bits(x)
	sign := uint16(bits>>16) & 0x8000
	exp := int(bits>>23) & 0xff
	mantissa := bits & 0x7fffff
	if exp == 0xff {
		if mantissa != 0 {
			return F16(sign | 0x7e00)
		}
		return F16(sign | 0x7c00)
	}
	e := exp - 127 + 15 // biased binary16 exponent
	switch {
	case e >= 0x1f:
		return F16(sign | 0x7c00)
	case e < -10:
		return F16(sign)
	case e <= 0: // subnormal: value = m * 2^-24
		return F16(sign | uint16(shiftRoundEven(mantissa|0x800000, uint(14-e))))
	}
	// A carry out of the mantissa rolls into the exponent, up to infinity: still correct.
	return F16(sign | uint16(shiftRoundEven(uint32(e)<<23|mantissa, 13)))
}

// Float32 widens h exactly.
func (h F16) Float32() float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mantissa := uint32(h) & 0x3ff
	switch exp {
	case 0:
		value := float32(mantissa) * float32(math.Ldexp(1, -24))
		if sign != 0 {
			return -value
		}
		return value
	case 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mantissa<<13)
	}
	return math.Float32frombits(sign | (exp+112)<<23 | mantissa<<13)
}

// BF16FromFloat32 rounds x to the nearest bfloat16 (ties to even).
func BF16FromFloat32(x float32) BF16 {
	bits := math.Float32bits(x)
	if x != x {
		return BF16(bits>>16 | 0x40)
	}
	return BF16(shiftRoundEven(bits, 16))
}

// Float32 widens b exactly.
func (b BF16) Float32() float32 { return math.Float32frombits(uint32(b) << 16) }
