import sys,glob,re,os
# usage: summarize.py DIR PID  -> maps dumps (after the first 3 smoke dumps if present) to phases.log
d,pid,first=sys.argv[1],sys.argv[2],int(sys.argv[3])
names=[l.split()[0] for l in open(os.path.join(d,'phases.log'))]
ns=[int(l.split('n=')[1].split()[0]) for l in open(os.path.join(d,'phases.log'))]
res={}
for i,(nm,n) in enumerate(zip(names,ns)):
    f=os.path.join(d,'cg.%s.%d'%(pid,first+i))
    tot=None
    for l in open(f):
        if l.startswith('summary:'): tot=int(l.split()[1])
    res[nm]=(tot,n)
    print('%-26s %12d  %9.0f/op'%(nm,tot,tot/n))
