package testproc

import "github.com/anishathalye/porcupine"

// RegisterInput is one call on a shared register, for porcupine: a write
// of Val to Key, or a read of Key (its output is the value read, 0 for no
// row).
type RegisterInput struct {
	Write bool
	Key   int64
	Val   int64
}

// UnknownValue is the state of a register whose value is not known, as
// right after a change that may have lost acknowledged writes: the first
// read there tells what survived.
const UnknownValue = int64(-1)

// RegisterModel is the porcupine model of independent int64 registers
// (one partition per key) that start at init, which may be UnknownValue.
// Operations are RegisterInput values with the value read as output.
func RegisterModel(init int64) porcupine.Model {
	return porcupine.Model{
		Partition: func(h []porcupine.Operation) [][]porcupine.Operation {
			by := map[int64][]porcupine.Operation{}
			for _, o := range h {
				k := o.Input.(RegisterInput).Key
				by[k] = append(by[k], o)
			}
			var out [][]porcupine.Operation
			for _, p := range by {
				out = append(out, p)
			}
			return out
		},
		Init: func() any { return init },
		Step: func(state, input, output any) (bool, any) {
			in := input.(RegisterInput)
			if in.Write {
				return true, in.Val
			}
			if state.(int64) == UnknownValue {
				return true, output
			}
			return output.(int64) == state.(int64), state
		},
		Equal: func(a, b any) bool { return a == b },
	}
}
