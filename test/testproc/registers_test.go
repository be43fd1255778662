package testproc

import (
	"testing"

	"github.com/anishathalye/porcupine"
)

// TestRegisterModel: a read must return the register's latest write in
// some order consistent with real time; a register that starts unknown
// takes its first read's value; registers are independent.
func TestRegisterModel(t *testing.T) {
	w := func(client int, key, val, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: RegisterInput{Write: true, Key: key, Val: val}, Call: call, Output: val, Return: ret}
	}
	r := func(client int, key, val, call, ret int64) porcupine.Operation {
		return porcupine.Operation{ClientId: client, Input: RegisterInput{Key: key}, Call: call, Output: val, Return: ret}
	}
	tests := []struct {
		name string
		init int64
		hist []porcupine.Operation
		want bool // linearizable
	}{
		{"read after write", 0, []porcupine.Operation{w(0, 1, 5, 0, 10), r(1, 1, 5, 20, 30)}, true},
		{"stale read after write", 0, []porcupine.Operation{w(0, 1, 5, 0, 10), r(1, 1, 0, 20, 30)}, false},
		{"concurrent read sees either", 0, []porcupine.Operation{w(0, 1, 5, 0, 30), r(1, 1, 0, 10, 20)}, true},
		{"other key untouched", 0, []porcupine.Operation{w(0, 1, 5, 0, 10), r(1, 2, 0, 20, 30)}, true},
		{"unknown start takes the first read", UnknownValue, []porcupine.Operation{r(0, 1, 7, 0, 10), r(1, 1, 7, 20, 30)}, true},
		{"unknown start then a different read", UnknownValue, []porcupine.Operation{r(0, 1, 7, 0, 10), r(1, 1, 8, 20, 30)}, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := porcupine.CheckOperations(RegisterModel(tc.init), tc.hist); got != tc.want {
				t.Fatalf("linearizable = %v, want %v", got, tc.want)
			}
		})
	}
}
