/*
 * run_user(fn, arg, &kernel_rsp): save the callee-saved registers and flags on the
 * kernel stack, iretq to user_entry_stub in ring 3 with a user stack just below the
 * current kernel stack. The stub calls fn(arg) and then executes ud2 at
 * user_exit_ud2; the #UD handler (user_trap) recognises that address and irets
 * to user_return at CPL 0 with the saved kernel rsp. rax (fn's result) survives.
 */
#define USER_CS 0x2b
#define USER_DS 0x23

    .text
    .code64
    .globl run_user_asm, user_return, user_exit_ud2
run_user_asm:
    push %rbp
    push %rbx
    push %r12
    push %r13
    push %r14
    push %r15
    pushfq
    mov %rsp, (%rdx)
    lea -256(%rsp), %rax            /* user stack: below everything we saved */
    and $-16, %rax
    pushq $USER_DS
    push %rax
    pushq $0x202                    /* IF=1: wake/timer IPIs are taken from ring 3 */
    pushq $USER_CS
    lea user_entry_stub(%rip), %rax
    push %rax
    xchg %rdi, %rsi                 /* stub: rdi = arg, rsi = fn */
    iretq
user_return:
    popfq
    pop %r15
    pop %r14
    pop %r13
    pop %r12
    pop %rbx
    pop %rbp
    ret

user_entry_stub:
    call *%rsi
user_exit_ud2:
    ud2

    .section .note.GNU-stack, "", @progbits
