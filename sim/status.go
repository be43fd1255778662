package sim

import (
	"context"
	"errors"
	"fmt"

	"github.com/milvus-io/milvus-proto/go-api/v2/commonpb"
)

// milvusError is an error that travels to clients as a commonpb.Status inside
// the response, the way Milvus reports errors (codes from Milvus's merr).
type milvusError struct {
	code      int32
	legacy    commonpb.ErrorCode
	reason    string
	retriable bool
}

func (e *milvusError) Error() string { return e.reason }

// Milvus error codes (pkg/util/merr) the simulator uses.
const (
	codeServiceNotReady    = 1
	codeServiceUnavailable = 2
	codeServiceInternal    = 5
	codeCollectionNotFound = 100
	codeCollectionNotLoad  = 101
	codePartitionNotFound  = 200
	codeIndexNotFound      = 700
	codeIndexDuplicate     = 702
	codeDatabaseNotFound   = 800
	codeDatabaseInvalid    = 802
	codeParameterInvalid   = 1100
	codeParameterMissing   = 1101
	codeParameterTooLarge  = 1102
	codeAliasNotFound      = 1600
	codeAliasConflict      = 1601
	codeAliasExists        = 1602
	codeFieldNotFound      = 1700
	codeUnsupported        = 3000
	codeTimeout            = 10001
	codeUnexpected         = 65535
)

func legacyCode(code int32) commonpb.ErrorCode {
	switch code {
	case codeServiceNotReady:
		return commonpb.ErrorCode_NotReadyServe
	case codeCollectionNotFound:
		return commonpb.ErrorCode_CollectionNotExists
	case codeParameterInvalid:
		return commonpb.ErrorCode_IllegalArgument
	case codePartitionNotFound:
		return commonpb.ErrorCode_MetaFailed
	case codeIndexNotFound:
		return commonpb.ErrorCode_IndexNotExist
	default:
		return commonpb.ErrorCode_UnexpectedError
	}
}

func newErr(code int32, format string, args ...any) *milvusError {
	return &milvusError{code: code, legacy: legacyCode(code), reason: fmt.Sprintf(format, args...)}
}

func errCollectionNotFound(db, name string) error {
	return newErr(codeCollectionNotFound, "collection not found[database=%s][collection=%s]", db, name)
}

func errCollectionNotLoaded(name string) error {
	return newErr(codeCollectionNotLoad, "collection not loaded[collection=%s]", name)
}

func errDatabaseNotFound(db string) error {
	return newErr(codeDatabaseNotFound, "database not found[database=%s]", db)
}

func errPartitionNotFound(name string) error {
	return newErr(codePartitionNotFound, "partition not found[partition=%s]", name)
}

func errIndexNotFound(coll string) error {
	return newErr(codeIndexNotFound, "index not found[collection=%s]", coll)
}

func errFieldNotFound(field, why string) error {
	return newErr(codeFieldNotFound, "%s: field not found[field=%s]", why, field)
}

// errParam is Milvus's ErrParameterInvalid with a message.
func errParam(format string, args ...any) error {
	return newErr(codeParameterInvalid, "%s: invalid parameter", fmt.Sprintf(format, args...))
}

func errUnsupported(format string, args ...any) error {
	return newErr(codeUnsupported, "%s: unsupported operation (not implemented by the milvus-ha-proxy simulator)", fmt.Sprintf(format, args...))
}

// errReplicateViolation is what a Milvus 2.6 cluster answers when a write or
// DDL reaches a replication secondary (the streaming layer's
// STREAMING_CODE_REPLICATE_VIOLATION surfaced through merr as an unexpected
// error), and what a primary answers to an incoming replicate stream.
func errReplicateViolation(format string, args ...any) error {
	return newErr(codeUnexpected, "code: STREAMING_CODE_REPLICATE_VIOLATION, cause: %s", fmt.Sprintf(format, args...))
}

// errStreamingInvalidArgument is the streaming coordinator's invalid-argument
// error (force promote validation) as the proxy surfaces it.
func errStreamingInvalidArgument(format string, args ...any) error {
	return newErr(codeUnexpected, "code: STREAMING_CODE_INVALID_ARGUMENT, cause: %s", fmt.Sprintf(format, args...))
}

// statusOf renders err as a Milvus status; nil is success.
func statusOf(err error) *commonpb.Status {
	if err == nil {
		return &commonpb.Status{}
	}
	var me *milvusError
	if errors.As(err, &me) {
		return &commonpb.Status{Code: me.code, ErrorCode: me.legacy, Reason: me.reason, Detail: me.reason, Retriable: me.retriable}
	}
	code := int32(codeUnexpected)
	switch {
	case errors.Is(err, context.DeadlineExceeded):
		code = codeTimeout
	case errors.Is(err, context.Canceled):
		code = 10000
	}
	return &commonpb.Status{Code: code, ErrorCode: commonpb.ErrorCode_UnexpectedError, Reason: err.Error(), Detail: err.Error()}
}

func okStatus() *commonpb.Status { return &commonpb.Status{} }
